# syntax=docker/dockerfile:1.7
# churnops: one image for every Python service of the platform (docs/deployment.md).
#
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t churnops:local .
#   docker run --rm -p 8000:8000 --env-file .env churnops:local           # serving (the default command)
#   docker run --rm --env-file .env churnops:local train --data /in.csv    # any `churnops` command
#   docker run --rm --entrypoint airflow churnops:local version            # another program of the image
#
# ENTRYPOINT is `tini -- churnops`, so the arguments of `docker run IMAGE ARGS` are a churnops command line
# and tini (PID 1) forwards signals and reaps the processes gunicorn, DVC and Airflow spawn. The default
# command serves the @champion model with gunicorn on port 8000. The MLflow server and the Airflow components
# run from this same image with another entrypoint (docker-compose.yml), so clients and servers share one
# locked set of versions.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# --- builder: the locked environment in /app/.venv ---------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
# opencv-python and scikit-image come with alibi-detect for its image detectors; tabular drift never imports
# them (tests/deploy/test_dockerfile.py proves it): leaving them out saves ~210 MB.
ARG UV_SKIP="--no-install-package opencv-python --no-install-package scikit-image"
# Every optional extra of pyproject.toml (the `celery` extra: the Celery provider for CeleryExecutor workers).
ARG UV_EXTRAS="--all-extras"
WORKDIR /src

# 1. Third-party packages, exactly as locked (this layer is rebuilt only when the lock changes).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project ${UV_EXTRAS} ${UV_SKIP}

# 2. The project itself, installed as a package (not editable: the runtime stage has no sources).
COPY README.md ./
COPY src/ src/
COPY pipeline/ pipeline/
COPY serving/ serving/
COPY monitoring/ monitoring/
COPY dashboard/ dashboard/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable ${UV_EXTRAS} ${UV_SKIP}

# --- runtime: the interpreter, the environment, the deployment files; no compiler, no uv, no sources --------
FROM ${PYTHON_IMAGE} AS runtime
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="churnops" \
      org.opencontainers.image.description="Churn prediction platform: serving, training pipeline, MLflow, Airflow" \
      org.opencontainers.image.revision="${GIT_COMMIT}"

# tini: PID 1. git: DVC and the pipeline call it (a workspace without .git is handled with core.no_scm).
# nginx-light: `churnops serve` runs it in front of gunicorn's workers (serving/front.py: slow clients).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git tini nginx-light \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 churnops \
 && useradd --system --uid 10001 --gid churnops --create-home --home-dir /home/churnops \
      --shell /usr/sbin/nologin churnops

COPY --from=builder /app/.venv /app/.venv
COPY deploy/ /app/deploy/
COPY dags/ /app/dags/

# The project home (CHURNOPS_HOME): settings and pipeline definition from the repository; data/, reports/ and
# the DVC cache are volumes in docker-compose.yml. Owned by the service user, who runs everything.
COPY --chown=churnops:churnops params.yaml dvc.yaml .dvcignore /workspace/
COPY --chown=churnops:churnops .dvc/config /workspace/.dvc/config
RUN mkdir -p /workspace/data /workspace/reports /workspace/.dvc/cache /opt/airflow/logs \
 && chown -R churnops:churnops /workspace /opt/airflow

ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHURNOPS_HOME=/workspace \
    CHURNOPS_LOG_FORMAT=json \
    CHURNOPS_GIT_COMMIT="${GIT_COMMIT}" \
    DVC_NO_ANALYTICS=1 \
    TRANSFORMERS_VERBOSITY=error \
    MPLBACKEND=Agg \
    NUMBA_CACHE_DIR=/tmp/churnops-numba \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/app/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

USER 10001:10001
WORKDIR /workspace
# No git repository in the image: DVC works without one once told so (local config, not the project's).
RUN dvc config --local core.no_scm true

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["tini", "--", "churnops"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
