# syntax=docker/dockerfile:1.7
# Model registry gRPC service (port 50052): adapters, lineage, aliases; PostgreSQL + S3 in
# production, SQLite and a local directory under /data when nothing is configured. No torch here:
# the image installs only `llama-mapper[registry]`. Build from the repository root:
#   docker build -f deploy/docker/registry.Dockerfile -t llama-mapper/registry:0.1.0 .
# Secrets (MAPPER_REGISTRY_TOKEN, MAPPER_REGISTRY_DATABASE_URL, AWS_*) come from the runtime
# environment (compose env, Kubernetes Secrets), never from the image.

ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3 setuptools==78.1.1 wheel==0.48.0
WORKDIR /src
COPY deploy/docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml setup.py README.md ./
COPY schemas ./schemas
COPY services ./services
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[registry]"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llama-mapper-registry" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mapper \
 && useradd --system --uid 10001 --gid mapper --home-dir /app --shell /usr/sbin/nologin mapper \
 && mkdir -p /app /data \
 && chown mapper:mapper /app /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MAPPER_LOG_FORMAT=json \
    MAPPER_VAR_DIR=/data \
    MAPPER_REGISTRY_HOST=0.0.0.0 \
    MAPPER_REGISTRY_PORT=50052 \
    MAPPER_REGISTRY_DATABASE_URL=sqlite:////data/registry.db \
    MAPPER_REGISTRY_ARTIFACT_URI=/data/artifacts
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 50052
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "llama_mapper.platform.rpc.health_probe", "127.0.0.1:50052"]
ENTRYPOINT ["python", "-m", "llama_mapper.registry.server"]
