#!/usr/bin/env bash
# Train `neural` on one GPU and check it against the CPU: bench/gpu_check.py says what and
# how. Under 8 minutes on one H200. Numbers: gpu_check.json and gpu_check.md in $OUT (or
# the folder given with --out; else a new temporary folder), a section for RESULTS.md.
#
#   bench/gpu_check.sh                 # the GPU check (--device cuda)
#   DEVICE=cpu bench/gpu_check.sh      # dry run, tiny sizes, about a minute on a CPU
#   bench/gpu_check.sh --device cpu    # the same
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "${DEVICE:-cuda}" != cpu ] && [[ " $* " != *" --device cpu "* ]]; then
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" bench/gpu_check.py "$@"
