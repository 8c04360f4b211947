"""Readers for the deployment files, with the semantics of the tools that consume them.

- :func:`interpolate`: docker compose's variable interpolation (``${VAR}``, ``${VAR:-default}``,
  ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``${VAR:+alt}``, ``$$``);
- :func:`dockerignore_includes`: whether a path reaches the build context under .dockerignore rules
  (moby's patternmatcher: last matching rule wins, a rule matching a parent folder matches its contents);
- :func:`dockerfile_stages`: the Dockerfile's instructions per build stage.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV_BIN = REPO / ".venv" / "bin"

# --------------------------------------------------------------------------------------------------------
# docker compose interpolation
# --------------------------------------------------------------------------------------------------------
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class VarRef:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?", ":+", "+"
    arg: str | None

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-", ":+", "+")

    @property
    def required(self) -> bool:
        return self.op in (":?", "?")


def variable_refs(text: str) -> list[VarRef]:
    if "${" in text and re.search(r"\$\{[^}]*\$\{", text):
        raise ValueError(f"nested interpolation is not supported by these checks: {text!r}")
    refs = []
    for m in _VAR.finditer(text):
        if m["escaped"]:
            continue
        refs.append(VarRef(m["braced"] or m["plain"], m["op"], m["arg"]))
    return refs


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Substitute like docker compose; raise InterpolationError for a missing required variable."""

    def sub(m: re.Match[str]) -> str:
        if m["escaped"]:
            return "$"
        name = m["braced"] or m["plain"]
        op, arg = m["op"], m["arg"] or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?":
            if not value:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == "?":
            if value is None:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _VAR.sub(sub, text)


def interpolate_tree(obj: Any, env: dict[str, str]) -> Any:
    if isinstance(obj, str):
        return interpolate(obj, env)
    if isinstance(obj, list):
        return [interpolate_tree(x, env) for x in obj]
    if isinstance(obj, dict):
        return {k: interpolate_tree(v, env) for k, v in obj.items()}
    return obj


def strings_in(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, list):
        return [s for x in obj for s in strings_in(x)]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings_in(v)]
    return []


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped), as compose reads an .env file."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: line without '=': {line!r}"
        env[key.strip()] = value.strip()
    return env


def as_argv(value: Any) -> list[str]:
    """A compose command/entrypoint (list, or string split like a shell) as an argument list."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


# --------------------------------------------------------------------------------------------------------
# .dockerignore (moby patternmatcher semantics)
# --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IgnoreRule:
    pattern: str
    exclusion: bool  # True for a "!" rule (lets paths back in)
    regex: re.Pattern[str]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "^", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern[i : i + 2] == "**":
                i += 1
                if pattern[i + 1 : i + 2] == "/":  # "**/" matches zero or more folders
                    i += 1
                    out += "(.*/)?"
                else:
                    out += ".*"
            else:
                out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pattern.index("]", i)
            out += pattern[i : j + 1]
            i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def read_dockerignore(path: Path = DOCKERIGNORE) -> list[IgnoreRule]:
    rules = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exclusion = line.startswith("!")
        if exclusion:
            line = line[1:].strip()
        line = posixpath.normpath(line).lstrip("/")
        rules.append(IgnoreRule(line, exclusion, _pattern_regex(line)))
    return rules


def dockerignore_includes(rel_path: str, rules: list[IgnoreRule]) -> bool:
    """True when `rel_path` (relative to the context, '/'-separated) is sent to the builder."""
    parts = rel_path.strip("/").split("/")
    parents = ["/".join(parts[:i]) for i in range(1, len(parts))]
    matched = False
    for rule in rules:
        if rule.exclusion != matched:  # an exclusion only matters once matched, a rule only before
            continue
        hit = bool(rule.regex.match(rel_path)) or any(rule.regex.match(p) for p in parents)
        if hit:
            matched = not rule.exclusion
    return not matched


# --------------------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def json_args(self) -> list[str] | None:
        text = self.args.strip()
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if not buf:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = ""
    return out


def dockerfile_stages(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages, in order."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in dockerfile_instructions(path.read_text()):
        if ins.keyword == "FROM":
            words = ins.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages and ins.keyword == "ARG":
            key, _, default = ins.args.partition("=")
            global_args[key] = default.strip('"')
        elif stages:
            stages[-1].instructions.append(ins)
    return global_args, stages


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------------
# Command lines of other programs, parsed by those programs' own parsers (in a child process, so importing
# Airflow and MLflow leaves the test process untouched).
# --------------------------------------------------------------------------------------------------------
def parse_click(group: Any, prog: str, argv: list[str]) -> str | None:
    """Parse `argv` with a click group down to the leaf command; None when valid, else the usage error."""
    import click

    try:
        ctx = group.make_context(prog, list(argv))
        current = group
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        while isinstance(current, click.Group) and rest:
            name, sub, rest = current.resolve_command(ctx, rest)
            ctx = sub.make_context(name, rest, parent=ctx)
            current = sub
            rest = [*getattr(ctx, "_protected_args", []), *ctx.args] if isinstance(sub, click.Group) else []
        if (
            isinstance(current, click.Group)
            and not ctx.invoked_subcommand
            and not getattr(current, "invoke_without_command", False)
        ):
            return f"{prog} {' '.join(argv)}: names a command group, not a command"
        return None
    except click.exceptions.Exit as exc:  # --help
        return None if exc.exit_code == 0 else f"{prog} {' '.join(argv)}: exit {exc.exit_code}"
    except click.ClickException as exc:
        return f"{prog} {' '.join(argv)}: {exc.format_message()}"


def _validate_in_child() -> None:
    """Child process: read [[program, argv], ...] as JSON on stdin, print {index: error or null}."""
    import contextlib
    import io
    import sys

    items = json.load(sys.stdin)
    out: dict[str, str | None] = {}
    for i, (program, argv) in enumerate(items):
        if program == "mlflow":
            from mlflow.cli import cli

            out[str(i)] = parse_click(cli, "mlflow", argv)
        elif program == "airflow":
            from airflow.cli.cli_parser import get_parser

            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    get_parser().parse_args(argv)
                out[str(i)] = None
            except SystemExit as exc:
                text = err.getvalue().strip().splitlines()
                out[str(i)] = f"airflow {' '.join(argv)}: exit {exc.code}: {text[-1] if text else ''}"
        else:
            out[str(i)] = f"no parser for {program}"
    sys.stdout.write("\n@@RESULT@@" + json.dumps(out))


def validate_command_lines(items: list[tuple[str, list[str]]], workdir: Path) -> list[str | None]:
    """Errors (or None) for each (program, argv) of Airflow or MLflow, parsed by their own CLIs."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "AIRFLOW_HOME": str(workdir / "airflow-home"),
        "TRANSFORMERS_VERBOSITY": "error",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    proc = subprocess.run(
        [sys.executable, "-c", "import deploy_support; deploy_support._validate_in_child()"],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parent,
        timeout=600,
    )
    if proc.returncode != 0 or "@@RESULT@@" not in proc.stdout:
        raise RuntimeError(f"validator failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.rsplit("@@RESULT@@", 1)[1])
    return [result[str(i)] for i in range(len(items))]


def airflow_config_options() -> dict[str, set[str]]:
    """Airflow's own configuration reference (config.yml of the installed version), without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")
    assert spec and spec.submodule_search_locations, "apache-airflow is not installed"
    path = Path(list(spec.submodule_search_locations)[0]) / "config_templates" / "config.yml"
    doc = yaml.safe_load(path.read_text())
    return {section: set((body or {}).get("options", {})) for section, body in doc.items()}
