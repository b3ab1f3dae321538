#!/usr/bin/env bash
# A pipeline run timed against the reference: one epoch of pytorch/examples' MNIST trainer (the benchmark's column
# (a)) measured right before the run, on the same machine, then the run itself. Writes LOG in the format
# scripts/results_md.py reads (DATE, COMMIT, CPU, ..., the run's output, WALL_SECONDS, REFERENCE_EPOCHS).
#
#   scripts/timed_repro.sh benchmarks/repro-$(date -u +%F).log                         # dvc repro
#   scripts/timed_repro.sh benchmarks/exp-dropout0-$(date -u +%F).log dvc exp run -S dropout=0
#
# Needs MNIST_MIRROR (the reference reads the MNIST files from it). Run it on a quiet machine: anything else
# running on the cores slows the run and the reference unequally.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/timed_repro.sh LOG [command ...] (default command: dvc repro)" >&2; exit 2; }
log="$1"; shift
[ $# -gt 0 ] || set -- dvc repro
[ -n "${MNIST_MIRROR:-}" ] || { echo "error: set MNIST_MIRROR to a directory of the four MNIST .gz files" >&2; exit 2; }
python="${PYTHON:-python}"

ref_json="$(mktemp)"
trap 'rm -f "$ref_json"' EXIT
{
  echo "DATE=$(date -u +%F)"
  echo "COMMIT=$(git rev-parse --short HEAD)"
  echo "CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "AVX512F=$(grep -qw avx512f /proc/cpuinfo && echo yes || echo no)"
  echo "CORES=$(nproc)"
  echo "COMMAND=$*"
} > "$log"
"$python" -m mnistpipe.lab.bench_parts reference --epochs 1 --seed 0 --json "$ref_json" >/dev/null
"$python" - "$ref_json" >> "$log" <<'PY'
import json, sys
print(f"REFERENCE_EPOCH_SECONDS={json.load(open(sys.argv[1]))['curve'][0]['train_seconds']:.1f}")
PY
start=$(date +%s.%N)
status=0
"$@" 2>&1 | tee -a "$log" || status=$?
end=$(date +%s.%N)
"$python" - "$start" "$end" "$log" >> "$log" <<'PY'
import re, sys
wall = float(sys.argv[2]) - float(sys.argv[1])
ref = float(re.search(r"^REFERENCE_EPOCH_SECONDS=(\S+)$", open(sys.argv[3]).read(), re.M).group(1))
print(f"WALL_SECONDS={wall:.1f}")
print(f"REFERENCE_EPOCHS={wall / ref:.2f}")
PY
tail -2 "$log"
exit "$status"
