# syntax=docker/dockerfile:1.7
# Evaluation gRPC service (port 50053): accuracy, macro-F1, calibration and latency targets of
# registered adapters against the golden sets. Installs `llama-mapper[evaluation]`.
# Build from the repository root:
#   docker build -f deploy/docker/evaluation.Dockerfile -t llama-mapper/evaluation:0.1.0 .

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
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[evaluation]"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llama-mapper-evaluation" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 mapper \
 && useradd --system --uid 10001 --gid mapper --home-dir /app --shell /usr/sbin/nologin mapper \
 && mkdir -p /app /data \
 && chown mapper:mapper /app /data
COPY --from=builder /opt/venv /opt/venv
# Reports and plots go under /data; matplotlib needs a writable config directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    MAPPER_LOG_FORMAT=json \
    MAPPER_VAR_DIR=/data \
    MAPPER_EVALUATION_HOST=0.0.0.0 \
    MAPPER_EVALUATION_PORT=50053
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 50053
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "llama_mapper.platform.rpc.health_probe", "127.0.0.1:50053"]
ENTRYPOINT ["python", "-m", "llama_mapper.evaluation.server"]
