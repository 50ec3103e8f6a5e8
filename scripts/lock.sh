#!/usr/bin/env bash
# Refresh requirements.lock: resolve the project's dependencies anew in a scratch venv and record every
# version. The torch family (torch, torchvision and their CUDA/triton wheels) is left out: its build depends
# on the machine (CPU or a CUDA version), so scripts/setup.sh pins torch itself and a GPU user's own is kept.
# Run it, rerun the quick study and the suite, and commit the lock with the numbers they give.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --upgrade pip
"$scratch/venv/bin/pip" install --quiet "torch==$(sed -n 's/^TORCH=//p' scripts/setup.sh)" \
  "torchvision==$(sed -n 's/^TORCHVISION=//p' scripts/setup.sh)"
"$scratch/venv/bin/pip" install --quiet -e ".[dev]"
{
  echo "# The resolved versions scripts/setup.sh installs (refresh: bash scripts/lock.sh). The torch family is"
  echo "# pinned in scripts/setup.sh instead: its build depends on the machine."
  "$scratch/venv/bin/pip" freeze --exclude-editable | grep -viE '^(torch|torchvision|triton|nvidia-|cuda-)' | sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
