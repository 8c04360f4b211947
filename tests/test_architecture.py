"""The dependency rule: dags -> pipeline, monitoring -> core <- serving, dashboard; only dags/ imports
Airflow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTER = {"pipeline", "serving", "monitoring", "dags", "dashboard"}

# layer -> top-level packages it must never import
FORBIDDEN = {
    "src/churnops": OUTER | {"airflow"},
    "serving": {"pipeline", "monitoring", "dags", "airflow"},
    "pipeline": {"serving", "dags", "airflow"},
    "monitoring": {"serving", "pipeline", "dags", "airflow"},
    "dashboard": OUTER - {"dashboard"} | {"airflow"},  # a front like serving: the core only
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_inwards(layer: str) -> None:
    offenders = []
    for path in sorted((REPO / layer).rglob("*.py")):
        bad = imported_top_levels(path) & FORBIDDEN[layer]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "imports pointing outwards:\n" + "\n".join(offenders)


def test_core_cli_discovers_outer_commands_by_entry_point_only() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '[project.entry-points."churnops.commands"]' in text
    for name in ("train", "serve", "drift", "models", "data", "features"):
        assert f"\n{name} = " in text, f"command {name!r} is not declared as an entry point"
