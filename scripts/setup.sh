#!/usr/bin/env bash
# Set up .venv/ in the repo root with everything the platform and its tests need, at the versions in
# requirements.lock (refresh them with scripts/lock.sh). Idempotent: a second run only checks.
# GPU users: install your CUDA build of torch into .venv first (python -m venv .venv && .venv/bin/pip
# install torch ...); it is kept, and only torch is taken from this machine's build.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH=2.14.1
TORCHVISION=0.29.1
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "installing torch $TORCH into .venv (first time: a few minutes)..."
  .venv/bin/pip install --quiet "torch==$TORCH" "torchvision==$TORCHVISION"
fi
stamp=.venv/.requirements.lock.sha256
if [[ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum requirements.lock | cut -d' ' -f1)" ]] || \
   ! .venv/bin/python -c "import lpwd, study, ray, mlflow, timm, mnist1d, pytest, moto, lightning, transformers, accelerate" 2>/dev/null; then
  echo "installing the project and its locked dependencies into .venv..."
  .venv/bin/pip install --quiet -r requirements.lock
  .venv/bin/pip install --quiet --no-deps -e .
  sha256sum requirements.lock | cut -d' ' -f1 > "$stamp"
fi
# kaleido's PNG export and the browser tests need a Chromium; Debian's package where apt is available
if ! command -v chromium >/dev/null 2>&1 && [[ -z "${BROWSER_PATH:-}" ]]; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    echo "installing Debian's chromium..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null
  else
    echo "note: no Chromium found; reports will be HTML only (install chromium or set BROWSER_PATH for PNGs)"
  fi
fi
