#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned CPU build of PyTorch and install UMedProtect into it.
# Usage: source scripts/setup.sh [EXTRAS]   e.g. EXTRAS="test,eval"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${UMEDPROTECT_VENV:-$ROOT/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build (see README for GPUs).
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e "$ROOT${1:+[$1]}"
export PATH="$VENV/bin:$PATH"
