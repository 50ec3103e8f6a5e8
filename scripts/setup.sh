#!/usr/bin/env bash
# Set up .venv/ in the repo root with everything the platform and its tests need.
# Idempotent: a second run only checks. GPU users: install your CUDA torch into
# .venv first (python -m venv .venv && .venv/bin/pip install torch ...); it is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
fi
if ! .venv/bin/python -c "import lpwd, study, ray, mlflow, timm, mnist1d, pytest, moto, lightning, transformers, accelerate" 2>/dev/null; then
  echo "installing the project into .venv (first time: a few minutes)..."
  .venv/bin/pip install --quiet -e ".[dev]"
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
