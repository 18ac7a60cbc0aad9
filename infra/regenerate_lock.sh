#!/usr/bin/env bash
# Regenerate requirements.lock: every transitive version of asg's dependencies (all extras), pinned.
#
#   infra/regenerate_lock.sh            # run from anywhere; needs network access to PyPI
#
# The lock is a pip constraints file: `pip install -c requirements.lock -e ".[dev]"` installs exactly these
# versions. torch is resolved as the CPU build (its dependencies, not CUDA's) and is left out of the lock on
# purpose: install the torch build you want first (`pip install torch==2.13.0` takes the CPU wheel here; GPU
# users install their CUDA build), and the lock never pulls torch by another route.
# uv resolves (pip's resolver backtracks for minutes on these ranges); it runs from a throwaway venv.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_PIN="${ASG_LOCK_TORCH:-torch==2.13.0+cpu}"
TOOLS="$(mktemp -d)"
trap 'rm -rf "$TOOLS"' EXIT
python3 -m venv "$TOOLS/venv"
"$TOOLS/venv/bin/pip" install -q "uv>=0.9,<1"
echo "$TORCH_PIN" > "$TOOLS/torch.txt"
# Where the CPU torch wheel comes from: this project's machines keep it in /opt/wheels; elsewhere PyTorch's
# CPU index publishes it.
TORCH_SOURCE=(--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match)
if [ -d /opt/wheels ]; then TORCH_SOURCE=(--find-links /opt/wheels); fi
"$TOOLS/venv/bin/uv" pip compile pyproject.toml --extra dev --extra ray \
  --python-version 3.11 "${TORCH_SOURCE[@]}" \
  -c "$TOOLS/torch.txt" --no-emit-package torch --no-annotate --no-header --quiet -o "$TOOLS/lock.txt"
{
  echo "# asg's pinned dependency set (pip constraints; every transitive version, all extras, CPython 3.11)."
  echo "# Regenerate with infra/regenerate_lock.sh. torch is not pinned here: install your build first."
  echo "#   pip install torch==2.13.0 && pip install -c requirements.lock -e \".[dev]\""
  cat "$TOOLS/lock.txt"
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) pins)"
