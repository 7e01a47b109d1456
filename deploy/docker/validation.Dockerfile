# syntax=docker/dockerfile:1.7
# Data validation gRPC service (port 50051): schema, label, leakage and detector checks on
# datasets before training. Installs `llama-mapper[validation]` (Presidio + spaCy's small English
# model, detect-secrets, the tokenizer from transformers). Build from the repository root:
#   docker build -f deploy/docker/validation.Dockerfile -t llama-mapper/validation:0.1.0 .

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
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[validation]"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llama-mapper-validation" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mapper \
 && useradd --system --uid 10001 --gid mapper --home-dir /app --shell /usr/sbin/nologin mapper \
 && mkdir -p /app /data \
 && chown mapper:mapper /app /data
COPY --from=builder /opt/venv /opt/venv
# Presidio's tldextract tries to fetch the public suffix list and falls back to the snapshot in its
# package; its cache must be writable by the non-root user.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TLDEXTRACT_CACHE=/data/tldextract \
    MAPPER_LOG_FORMAT=json \
    MAPPER_VAR_DIR=/data \
    MAPPER_VALIDATION_HOST=0.0.0.0 \
    MAPPER_VALIDATION_PORT=50051
WORKDIR /app
USER 10001:10001
EXPOSE 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "llama_mapper.platform.rpc.health_probe", "127.0.0.1:50051"]
ENTRYPOINT ["python", "-m", "llama_mapper.validation.server"]
