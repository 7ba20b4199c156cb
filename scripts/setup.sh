#!/usr/bin/env bash
# Creates .venv with the CPU build of PyTorch first (a bare `torch` pulls a multi-GB CUDA build),
# then recstack with every extra. Re-running when already set up is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # torch==2.13.0 is a CPU build on this machine's disk; elsewhere fall back to PyTorch's CPU index.
  $PIP install -q torch==2.13.0 \
    || $PIP install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
$PIP install -q -e ".[all]"
# Sharded tables (distributed.embeddings: sharded, docs/distributed.md): fbgemm's CPU kernels built
# for torch 2.13 (fbgemm-gpu-cpu 1.9.0 fails to load against it), then TorchRec without its
# metadata's CUDA `fbgemm-gpu` requirement, then TorchRec's own dependencies (the `sharded` extra).
# About 8 MB of wheels. GPUs: fbgemm-gpu (CUDA build matching torch) instead of fbgemm-gpu-cpu.
if ! .venv/bin/python -c "import torchrec, fbgemm_gpu" 2>/dev/null; then
  $PIP install -q fbgemm-gpu-cpu==1.8.0
  $PIP install -q --no-deps torchrec==1.9.2
  $PIP install -q -e ".[sharded]"
fi
.venv/bin/python -c "import recstack, torch, faiss, fastapi, onnxruntime, gensim, pymilvus, torchrec, fbgemm_gpu" 
# Headless Chromium for the demo page's browser test (Debian package, no downloads at test time).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; the browser test will fail" >&2
fi
