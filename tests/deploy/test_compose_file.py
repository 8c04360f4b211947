"""docker-compose.yml, checked here without a Docker engine: it parses, every command runs a real program of
the image (parsed by that program's own command-line parser), every variable is defined, no secret is written
in it, and the dependencies wait for what they need."""

from __future__ import annotations

import base64
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_support import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    REPO,
    InterpolationError,
    airflow_config_options,
    as_argv,
    dockerfile_stages,
    environment_of,
    interpolate,
    interpolate_tree,
    load_compose,
    parse_click,
    read_env_file,
    strings_in,
    validate_command_lines,
    variable_refs,
)

OUR_IMAGE = "${CHURNOPS_IMAGE:-churnops:local}"
PLATFORM_SERVICES = {
    "postgres",
    "redis",
    "minio",
    "storage-init",
    "mlflow",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "serving",
}
# Third-party images: the programs their documented entrypoints run for the commands used here.
EXTERNAL_IMAGES = {
    "postgres": {"command": None, "healthcheck": {"pg_isready"}},
    "redis": {"command": "redis-server", "healthcheck": {"redis-cli"}},
    "quay.io/minio/minio": {"command": "server", "healthcheck": {"mc"}},
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET_KEY|JWT|TOKENS")
COMPOSE_OWN_VARIABLES = {"COMPOSE_PROFILES", "COMPOSE_PROJECT_NAME"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def env_file() -> dict[str, str]:
    """What `python3 deploy/make_env.py > .env` produces."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "make_env.py")], capture_output=True, text=True, check=True
    )
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"churnops-test-env-{os.getpid()}"
    path.write_text(proc.stdout)
    try:
        return read_env_file(path)
    finally:
        path.unlink()


@pytest.fixture(scope="module")
def resolved(compose: dict[str, Any], env_file: dict[str, str]) -> dict[str, Any]:
    return interpolate_tree(compose, env_file)


@pytest.fixture(scope="module")
def external_errors(
    compose: dict[str, Any], resolved: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str, tuple[str, ...]], str | None]:
    """Every Airflow and MLflow command line of the file (commands and healthchecks, except the celery
    provider's), parsed by Airflow's and MLflow's own parsers in one child process."""
    items: list[tuple[str, str, tuple[str, ...]]] = []
    for name, raw in compose["services"].items():
        service = resolved["services"][name]
        if raw["image"] != OUR_IMAGE:
            continue
        argv = effective_argv(service)
        if argv[0] == "/app/deploy/airflow/entrypoint.sh" and argv[1:2] != ["celery"]:
            items.append((name, "airflow", tuple(argv[1:])))
        elif argv[0] == "mlflow":
            items.append((name, "mlflow", tuple(argv[1:])))
        test = (service.get("healthcheck") or {}).get("test") or []
        if test[:2] == ["CMD", "airflow"]:
            items.append((f"{name} healthcheck", "airflow", tuple(test[2:])))
    errors = validate_command_lines([(p, list(a)) for _, p, a in items], tmp_path_factory.mktemp("cli"))
    return dict(zip(items, errors, strict=True))


def image_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    _, stages = dockerfile_stages()
    runtime = stages[-1]
    return runtime.all("ENTRYPOINT")[-1].json_args(), runtime.all("CMD")[-1].json_args()


def effective_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's (an entrypoint set in compose
    drops the image's CMD), with tini (PID 1) taken off."""
    image_ep, image_cmd = image_entrypoint_and_cmd()
    if "entrypoint" in service:
        argv = as_argv(service["entrypoint"]) + as_argv(service.get("command"))
    else:
        argv = image_ep + (as_argv(service["command"]) if "command" in service else image_cmd)
    if argv[:2] == ["tini", "--"]:
        argv = argv[2:]
    return argv


def test_the_compose_file_parses_and_runs_the_whole_platform(compose: dict[str, Any]) -> None:
    assert compose["name"] == "churnops"
    assert PLATFORM_SERVICES <= set(compose["services"])
    for name, service in compose["services"].items():
        assert service.get("image"), f"service {name} has no image"


def test_every_variable_has_a_default_or_is_in_the_env_example(compose: dict[str, Any]) -> None:
    example = read_env_file(ENV_EXAMPLE)
    refs = [ref for text in strings_in(compose) for ref in variable_refs(text)]
    assert refs, "the compose file uses no variables at all?"
    undefined = sorted({r.name for r in refs if not r.has_default and r.name not in example})
    assert not undefined, f"variables used without a default and missing from .env.example: {undefined}"
    used = {r.name for r in refs}
    stale = sorted(set(example) - used - COMPOSE_OWN_VARIABLES)
    assert not stale, f".env.example lists variables the compose file never reads: {stale}"


def test_secrets_come_only_from_the_environment_and_are_required(compose: dict[str, Any]) -> None:
    example = read_env_file(ENV_EXAMPLE)
    secret_vars = {name for name in example if SECRET_NAME.search(name)}
    assert {
        "POSTGRES_PASSWORD",
        "S3_SECRET_ACCESS_KEY",
        "REDIS_PASSWORD",
        "AIRFLOW_FERNET_KEY",
    } <= secret_vars
    assert all(example[name] == "" for name in secret_vars), "the committed example must hold no secret value"
    for name, service in compose["services"].items():
        for key, value in environment_of(service).items():
            if SECRET_NAME.search(key) and not key.endswith(("_KEY_ID", "_FILE")):
                refs = variable_refs(value)
                assert refs and all(r.required for r in refs if SECRET_NAME.search(r.name)), (
                    f"{name}: {key} must come from a required ${{VAR:?...}} variable, not {value!r}"
                )
    # Secrets inside connection URLs are required too, so a missing one stops compose before any container.
    for text in strings_in(compose):
        for ref in variable_refs(text):
            if ref.name in secret_vars:
                assert ref.required, f"{ref.name} is used without ':?' in {text!r}"


def test_the_env_file_is_ignored_by_git() -> None:
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 1


def test_make_env_fills_every_secret_with_a_usable_random_value(
    compose: dict[str, Any], env_file: dict[str, str]
) -> None:
    from cryptography.fernet import Fernet

    example = read_env_file(ENV_EXAMPLE)
    assert set(env_file) == set(example)
    secrets = {k: v for k, v in env_file.items() if SECRET_NAME.search(k)}
    assert all(secrets.values()) and len(set(secrets.values())) == len(secrets)
    for name, value in secrets.items():
        if name == "AIRFLOW_FERNET_KEY":
            assert len(base64.urlsafe_b64decode(value)) == 32
            Fernet(value.encode())  # Airflow's own check of the key
        else:
            assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", value), f"{name} is not URL-safe: {value!r}"
    assert {k: v for k, v in env_file.items() if k not in secrets} == {
        k: v for k, v in example.items() if k not in secrets
    }
    interpolate_tree(compose, env_file)  # no required variable left unset

    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        interpolate_tree(compose, example)  # the example as is (empty secrets) is refused


def test_every_command_runs_a_real_entry_point(
    compose: dict[str, Any], resolved: dict[str, Any], external_errors: dict
) -> None:
    from churnops.cli import main as churnops_cli

    entrypoint_sh = REPO / "deploy" / "airflow" / "entrypoint.sh"
    external: list[tuple[str, str, list[str]]] = []  # (where, program, argv)
    for name, raw in compose["services"].items():
        service = resolved["services"][name]
        if raw["image"] != OUR_IMAGE:
            repo_name = raw["image"].split(":")[0]
            assert repo_name in EXTERNAL_IMAGES, f"{name}: unknown image {raw['image']}"
            expected = EXTERNAL_IMAGES[repo_name]["command"]
            argv = as_argv(service.get("command"))
            assert (argv[0] if argv else None) == expected, f"{name}: {argv}"
            continue
        argv = effective_argv(service)
        program, args = argv[0], argv[1:]
        if program == "churnops":
            error = parse_click(churnops_cli, "churnops", args)
            assert error is None, f"service {name}: {error}"
        elif program == "/app/deploy/airflow/entrypoint.sh":
            assert entrypoint_sh.stat().st_mode & stat.S_IXUSR
            assert entrypoint_sh.read_text().rstrip().endswith('exec airflow "$@"')
            external.append((name, "airflow", args))
        elif program == "mlflow":
            external.append((name, "mlflow", args))
        else:
            pytest.fail(f"service {name} runs {program!r}, which is no entry point of the image")

    celery = [w for w, p, a in external if p == "airflow" and a[:1] == ["celery"]]
    checked = [(w, p, tuple(a)) for w, p, a in external if w not in celery]
    assert set(checked) <= set(external_errors)
    failures = [f"{w}: {external_errors[(w, p, a)]}" for w, p, a in checked if external_errors[(w, p, a)]]
    assert not failures, "\n".join(failures)
    assert {w for w, _, _ in checked} >= {
        "mlflow",
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
    }
    assert celery == ["airflow-worker"]


def test_every_healthcheck_runs_a_real_program(
    compose: dict[str, Any], resolved: dict[str, Any], external_errors: dict
) -> None:
    airflow_checks: list[tuple[str, list[str]]] = []
    for name, raw in compose["services"].items():
        check = resolved["services"][name].get("healthcheck") or {}
        if check.get("disable"):
            assert raw.get("restart") == "no", f"{name}: only one-shot services may go without a healthcheck"
            continue
        test = check.get("test")
        assert test, f"{name}: long-running service without a healthcheck"
        kind, argv = test[0], test[1:]
        if kind == "CMD-SHELL":
            assert name == "airflow-worker" and argv[0].startswith("celery --app airflow.providers.celery")
            continue
        assert kind == "CMD"
        if raw["image"] != OUR_IMAGE:
            assert argv[0] in EXTERNAL_IMAGES[raw["image"].split(":")[0]]["healthcheck"], name
        elif argv[:2] == ["python", "/app/deploy/healthcheck.py"]:
            assert (REPO / "deploy" / "healthcheck.py").is_file()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\S+", argv[2]), argv
        elif argv[0] == "airflow":
            airflow_checks.append((name, argv[1:]))
        else:
            pytest.fail(f"{name}: healthcheck runs {argv[0]!r}")
    errors = {n: external_errors[(f"{n} healthcheck", "airflow", tuple(a))] for n, a in airflow_checks}
    assert not [e for e in errors.values() if e], errors
    assert set(errors) == {"airflow-dag-processor", "airflow-triggerer"}


def test_health_urls_match_the_ports_the_services_listen_on(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert services["serving"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8000/health"
    assert "--port" in services["serving"]["command"]
    assert services["serving"]["command"][services["serving"]["command"].index("--port") + 1] == "8000"
    mlflow_cmd = services["mlflow"]["command"]
    assert mlflow_cmd[mlflow_cmd.index("--port") + 1] == "5000"
    assert services["mlflow"]["healthcheck"]["test"][-1] == "http://127.0.0.1:5000/health"
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"
    assert services["airflow-scheduler"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8974/health"


def test_mlflow_server_runs_lean_and_accepts_its_service_name(resolved: dict[str, Any]) -> None:
    mlflow = resolved["services"]["mlflow"]
    cmd = mlflow["command"]
    assert cmd[cmd.index("--workers") + 1] == "1"
    assert mlflow["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    allowed = cmd[cmd.index("--allowed-hosts") + 1].split(",")
    client_uri = resolved["services"]["serving"]["environment"]["MLFLOW_TRACKING_URI"]
    assert client_uri == "http://mlflow:5000" and "mlflow:5000" in allowed
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")


def test_airflow_settings_are_options_airflow_knows(compose: dict[str, Any]) -> None:
    options = airflow_config_options()
    unknown = []
    for name, service in compose["services"].items():
        for key in environment_of(service):
            if not key.startswith("AIRFLOW__"):
                continue
            section, option = (part.lower() for part in key[len("AIRFLOW__") :].split("__", 1))
            if section == "celery":  # the celery provider's options: checked with the provider
                continue
            if option not in options.get(section, set()):
                unknown.append(f"{name}: {key}")
    assert not unknown, f"Airflow has no such options: {sorted(set(unknown))}"


def test_all_airflow_components_share_one_configuration(compose: dict[str, Any]) -> None:
    airflow = [n for n in compose["services"] if n.startswith("airflow-")]
    envs = [environment_of(compose["services"][n]) for n in airflow]
    for key in (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__CORE__FERNET_KEY",
        "AIRFLOW__API__SECRET_KEY",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
        "AIRFLOW__CORE__EXECUTOR",
    ):
        values = {env.get(key) for env in envs}
        assert len(values) == 1 and None not in values, f"{key} differs between Airflow components: {values}"
    assert envs[0]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert interpolate(envs[0]["AIRFLOW__CORE__EXECUTOR"], {}) == "LocalExecutor"


def test_tasks_run_where_the_workspace_is(compose: dict[str, Any]) -> None:
    """LocalExecutor runs tasks in the scheduler, CeleryExecutor in the workers: both mount the pipeline's
    workspace (data, reports, DVC cache) and get the pipeline's environment."""
    services = compose["services"]
    for name in ("airflow-scheduler", "airflow-worker", "churnops"):
        mounts = {v.split(":")[1] for v in services[name]["volumes"]}
        assert {"/workspace/data", "/workspace/reports", "/workspace/.dvc/cache"} <= mounts, name
        env = environment_of(services[name])
        assert {
            "CHURNOPS_DVC_REMOTE",
            "CHURNOPS_ARTIFACT_ROOT",
            "MLFLOW_TRACKING_URI",
            "REDIS_URL",
            "AWS_ENDPOINT_URL_S3",
            "CHURNOPS_AIRFLOW_URL",
        } <= set(env), name


def test_celery_executor_is_an_opt_in_profile(compose: dict[str, Any]) -> None:
    worker = compose["services"]["airflow-worker"]
    assert worker["profiles"] == ["celery"]
    assert as_argv(worker["command"])[:2] == ["celery", "worker"]
    env = environment_of(worker)
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    others = [n for n, s in compose["services"].items() if "profiles" in s]
    assert sorted(others) == ["airflow-worker", "churnops"]
    docs = (REPO / "docs" / "deployment.md").read_text()
    assert "COMPOSE_PROFILES=celery" in docs and "AIRFLOW_EXECUTOR=CeleryExecutor" in docs


def test_the_celery_worker_image_carries_the_celery_provider() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = pyproject["project"].get("optional-dependencies", {})
    holder = [
        name
        for name, reqs in extras.items()
        if any(r.startswith("apache-airflow-providers-celery") for r in reqs)
    ]
    if not holder:
        pytest.skip(
            "pending: pyproject.toml declares no extra with apache-airflow-providers-celery yet "
            "(the `celery` extra docs/deployment.md asks for); the celery profile needs it"
        )
    lock = (REPO / "uv.lock").read_text()
    assert 'name = "apache-airflow-providers-celery"' in lock, "run `uv lock` after adding the extra"
    global_args, stages = dockerfile_stages()
    syncs = " ".join(i.args for s in stages for i in s.all("RUN") if "uv sync" in i.args)
    extras_arg = (
        global_args.get("UV_EXTRAS", "")
        + " "
        + " ".join(i.args for s in stages for i in s.all("ARG") if i.args.startswith("UV_EXTRAS"))
    )
    assert "--all-extras" in syncs + extras_arg or f"--extra {holder[0]}" in syncs + extras_arg


def test_dependencies_wait_for_healthy_or_finished_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert not (services[dep].get("healthcheck") or {}).get("disable"), f"{name} -> {dep}"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{name} -> {dep} must be one-shot"
            else:
                pytest.fail(f"{name} -> {dep}: condition {condition} does not wait for readiness")
    assert "storage-init" in services["mlflow"]["depends_on"]
    assert "airflow-init" in services["airflow-scheduler"]["depends_on"]


def test_published_ports_bind_to_the_configured_interface_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports") or []:
            assert str(port).startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: {port}"
    for internal in ("postgres", "redis"):
        assert not compose["services"][internal].get("ports"), f"{internal} must not be published"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        if image == OUR_IMAGE:
            assert service.get("build", {}).get("context") == ".", name
            continue
        tag = image.rsplit(":", 1)[-1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", f"{name}: image {image} is not pinned to a tag"


def test_postgres_init_script_is_mounted_and_gets_every_database_password(compose: dict[str, Any]) -> None:
    pg = compose["services"]["postgres"]
    assert (
        "./deploy/postgres/init-databases.sh:/docker-entrypoint-initdb.d/10-init-databases.sh:ro"
        in pg["volumes"]
    )
    script = (REPO / "deploy" / "postgres" / "init-databases.sh").read_text()
    env = environment_of(pg)
    for var in re.findall(r"create_database \S+ \S+ (\w+_PASSWORD)", script):
        assert var in env, f"the init script reads {var}, which the postgres service does not get"
    assert COMPOSE_FILE.name == "docker-compose.yml"
