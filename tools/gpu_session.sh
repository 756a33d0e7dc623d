#!/usr/bin/env bash
# The checks a session runs on the lent GPU machine, most important first, in one device call each (about 30 minutes of
# device time a session; a call may run 600 s). Run from the repository root on that machine:
#
#   bash tools/gpu_session.sh check   # the CUDA suite, then attention's kernels beside PyTorch's SDPA      (~200 s)
#   bash tools/gpu_session.sh bench   # bench/gpu.py, then the GPT and makemore steps beside PyTorch      (~300 s)
#   bash tools/gpu_session.sh train   # examples/gpt.py large in bf16: validation loss must stay < 1.6     (~90 s)
#
# Data: carry a folder holding tinyshakespeare.txt and names.txt and point DATA at it (default .devdata). Each call gets
# an empty compile cache, as CI does, so kernels of changed code cannot come from an older run's cache.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" PICOGRAD_DATA="${DATA:-$PWD/.devdata}" XDG_CACHE_HOME="$(mktemp -d)"
trap 'rm -rf "$XDG_CACHE_HOME"' EXIT
echo "commit $(git log --oneline -1 2>/dev/null || echo '(no git)')"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader

case "${1:-check}" in
  check)
    timeout 240 python -m pytest -q -n 14 -p no:cacheprovider tests -k "CUDA or cuda or jit or replay" 2>&1 | tail -4
    timeout 200 python bench/attention_gpu.py --runs 10 2>&1 | grep -v "map lanes" ;;
  bench)
    timeout 220 python bench/gpu.py --runs 10 --no-compile 2>&1 | grep "^|\|First call"
    (cd bench && timeout 240 python train.py --devices CUDA --models makemore gpt --precisions 2>&1 | grep "^|\|makemore\|gpt") ;;
  train)
    DEV=CUDA timeout 240 python examples/gpt.py --steps 2000 --quiet --plot "" --sample-chars 0 \
      --data "$PICOGRAD_DATA/tinyshakespeare.txt" 2>&1 | grep -A12 trained ;;
  *) echo "usage: bash tools/gpu_session.sh check|bench|train" >&2; exit 2 ;;
esac
