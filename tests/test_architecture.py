"""The shape of the house (docs/architecture.md): dependencies point inwards, no import circles, one module
per outside system, and nothing but dags/ imports Airflow.

Imports are read from the source (``ast``), all of them: at the top of a module, inside functions (the
lazy imports that keep start-up cheap) and under ``TYPE_CHECKING``: a circle is a circle in the design even
when Python happens to resolve it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTER = {"pipeline", "serving", "monitoring", "dags", "dashboard"}
# Where the product's Python lives (tests and benchmarks are its users, not part of it).
PRODUCT = ("src/churnops", "pipeline", "serving", "monitoring", "dags", "dashboard")

# layer -> top-level packages it must never import
FORBIDDEN = {
    "src/churnops": OUTER | {"airflow"},
    "serving": {"pipeline", "monitoring", "dags", "airflow"},
    "pipeline": {"serving", "dags", "airflow"},
    "monitoring": {"serving", "pipeline", "dags", "airflow"},
    "dashboard": OUTER - {"dashboard"} | {"airflow"},  # a front like serving: the core only
}


# -- reading the source --------------------------------------------------------------------------
def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO)
    parts = rel.with_suffix("").parts
    if parts[0] == "src":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_names(tree: ast.AST) -> Iterator[str]:
    """Every absolute module name imported (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def imported_top_levels(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imported_names(ast.parse(path.read_text(), filename=str(path)))}


def import_graph(folders: Iterable[str] = PRODUCT) -> dict[str, set[str]]:
    """module -> the product modules it imports (a name resolves to the longest module it starts with)."""
    files = {module_name(p): p for p in python_files(*folders)}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = {resolve(n) for n in imported_names(ast.parse(path.read_text(), filename=str(path)))}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def room(module: str) -> str:
    """The room a module belongs to: ``churnops.models.search`` -> ``churnops.models``, ``pipeline.demo``
    -> itself. A room is a core module or subpackage, or one module of an outer layer."""
    return ".".join(module.split(".")[:2])


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = room(module)
        rooms.setdefault(here, set()).update(room(t) for t in targets if room(t) != here)
    return rooms


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# -- the rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_inwards(layer: str) -> None:
    offenders = []
    for path in python_files(layer):
        bad = imported_top_levels(path) & FORBIDDEN[layer]
        if bad:
            offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "imports pointing outwards:\n" + "\n".join(offenders)


def test_nothing_outside_dags_imports_airflow() -> None:
    offenders = []
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("dags", "tests") or rel.parts[0].startswith("."):
            continue  # tests load the DAGs with Airflow's DagBag
        if "airflow" in imported_top_levels(path):
            offenders.append(str(rel))
    assert not offenders, f"Airflow imported outside dags/: {offenders}"


def test_no_module_imports_itself_back_through_others() -> None:
    found = circles(import_graph())
    assert not found, "import circles between modules:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_two_rooms_depend_on_each_other() -> None:
    found = circles(room_graph(import_graph()))
    shown = "\n".join(" <-> ".join(c) for c in found)
    assert not found, f"import circles between rooms (core modules / subpackages, outer modules):\n{shown}"


def test_the_circle_finder_finds_a_circle() -> None:
    """The two tests above would see a circle: one through a lazy import, one between two rooms."""
    graph = {"pipeline.cli": {"pipeline.demo"}, "pipeline.demo": {"pipeline.cli"}, "churnops.io": set()}
    assert circles(graph) == [["pipeline.cli", "pipeline.demo"]]
    modules = {
        "churnops.tracking": {"churnops.models.search"},
        "churnops.models.training": {"churnops.tracking"},
        "churnops.models.search": set(),
    }
    assert circles(modules) == []
    assert circles(room_graph(modules)) == [["churnops.models", "churnops.tracking"]]
    lazy = ast.parse("def f():\n    from pipeline.demo import run_demo\n")
    assert "pipeline.demo" in set(imported_names(lazy))


# -- one module per outside system ---------------------------------------------------------------
def _called(tree: ast.AST) -> Iterator[str]:
    """The dotted names of the functions called (``redis.Redis.from_url(url)``: ``redis.Redis.from_url``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts = []
            cur: ast.AST = node.func
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                parts.append(cur.id)
            yield ".".join(reversed(parts))


def _calls_any(tree: ast.AST, suffixes: set[str]) -> bool:
    """Whether a call's dotted name is one of `suffixes` or ends with one (``r.Redis`` for ``Redis``)."""
    return any(name == s or name.endswith("." + s) for name in _called(tree) for s in suffixes)


def _strings(tree: ast.AST) -> Iterator[str]:
    """String constants that are not docstrings (f-string parts included)."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


def _uses_redis_client(tree: ast.AST) -> bool:
    return _calls_any(tree, {"Redis", "StrictRedis", "redis.from_url", "Redis.from_url", "ConnectionPool"})


def _uses_mlflow_registry(tree: ast.AST) -> bool:
    return _calls_any(tree, {
        "register_model", "create_registered_model", "create_model_version", "set_registered_model_alias",
        "delete_registered_model_alias", "get_model_version_by_alias", "search_model_versions",
        "set_model_version_tag", "set_registered_model_tag", "get_registered_model",
    })


def _uses_airflow_rest(tree: ast.AST) -> bool:
    return any("/auth/token" in s or "/dagRuns" in s or s.startswith("/api/v2/dags") for s in _strings(tree))


def _uses_s3(tree: ast.AST) -> bool:
    return _calls_any(tree, {"boto3.client", "boto3.resource", "boto3.Session", "boto3.session.Session"})


def _uses_sql_database(tree: ast.AST) -> bool:
    return _calls_any(tree, {"create_engine", "psycopg.connect", "psycopg2.connect"})


def _sql_owner() -> set[str]:
    # The SQL database adapter moves from pipeline/batch.py into the core (churnops.database); either is the
    # one client, whichever exists.
    core = "src/churnops/database.py"
    return {core} if (REPO / core).is_file() else {"pipeline/batch.py"}


OUTSIDE_SYSTEMS = {
    # system: (how a module shows it talks to it, the module(s) allowed to)
    "Redis": (_uses_redis_client, lambda: {"src/churnops/feature_store/connection.py"}),
    "MLflow model registry": (_uses_mlflow_registry, lambda: {"src/churnops/registry.py"}),
    "Airflow REST API": (_uses_airflow_rest, lambda: {"src/churnops/airflow_rest.py"}),
    "S3": (_uses_s3, lambda: {"src/churnops/storage.py"}),
    "SQL database": (_uses_sql_database, _sql_owner),
}


@pytest.mark.parametrize("system", sorted(OUTSIDE_SYSTEMS))
def test_one_module_talks_to_each_outside_system(system: str) -> None:
    uses, owners = OUTSIDE_SYSTEMS[system]
    clients = {
        str(path.relative_to(REPO))
        for path in python_files(*PRODUCT)
        if uses(ast.parse(path.read_text(), filename=str(path)))
    }
    assert clients <= owners(), (
        f"a second client of {system}: {sorted(clients - owners())} (use {sorted(owners())})"
    )


@pytest.mark.parametrize(
    ("system", "source"),
    [
        ("Redis", "import redis\nclient = redis.Redis.from_url(url)\n"),
        ("MLflow model registry", "client.set_registered_model_alias('m', 'champion', '3')\n"),
        ("Airflow REST API", "requests.post(base + f'/api/v2/dags/{dag}/dagRuns', json=body)\n"),
        ("S3", "def f():\n    import boto3\n    return boto3.client('s3')\n"),
        ("SQL database", "import sqlalchemy as sa\nengine = sa.create_engine(url)\n"),
    ],
)
def test_a_second_client_would_be_seen(system: str, source: str) -> None:
    uses, _ = OUTSIDE_SYSTEMS[system]
    assert uses(ast.parse(source))
    assert not uses(ast.parse('"""Docs: /api/v2/dags/x/dagRuns, redis.Redis(), boto3.client()."""\n'))
    assert not uses(ast.parse("def f(client: redis.Redis) -> None:\n    pass\n"))


def test_core_cli_discovers_outer_commands_by_entry_point_only() -> None:
    text = (REPO / "pyproject.toml").read_text()
    assert '[project.entry-points."churnops.commands"]' in text
    for name in ("train", "serve", "drift", "models", "data", "features"):
        assert f"\n{name} = " in text, f"command {name!r} is not declared as an entry point"
