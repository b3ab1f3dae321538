#!/usr/bin/env bash
# Wall time of N queued baseline experiments (different seeds) under `dvc queue start -j J`, for each J in JOBS.
#
#   scripts/queue_timing.sh                 # N=4, JOBS="1 2": the README's measurement
#   N=2 JOBS=2 scripts/queue_timing.sh      # a quick check
#
# Run it from the root of a committed, reproduced checkout (the queue runs the committed state) on an otherwise
# idle machine. Each round uses fresh seeds, so the run-cache cannot restore a result of an earlier round. Every
# experiment reruns `download` (the split depends on the seed) and `train_baseline`. Export OMP_NUM_THREADS
# first to give each experiment fewer threads (README, "Parallel experiments").
set -euo pipefail

n="${N:-4}"
jobs="${JOBS:-1 2}"
seed="${FIRST_SEED:-1000}"

. "$(dirname "$0")/queue_common.sh"
require_clean_workspace

active() {
  dvc queue status 2>/dev/null | awk '$NF == "Queued" || $NF == "Running"' | wc -l
}

for j in $jobs; do
  before="$(exp_refs)"
  for _ in $(seq "$n"); do
    seed=$((seed + 1))
    dvc exp run --queue -S "seed=$seed" train_baseline >/dev/null
  done
  t0="$(date +%s.%N)"
  start_workers "$j"
  next_status=$(( $(date +%s) + 20 ))
  while [ "$(exp_refs)" -lt $((before + n)) ]; do
    if [ "$(date +%s)" -ge "$next_status" ]; then
      [ "$(active)" -gt 0 ] || break
      require_workers
      next_status=$(( $(date +%s) + 20 ))
    fi
    sleep 1
  done
  t1="$(date +%s.%N)"
  dvc queue stop >/dev/null 2>&1 || true
  done_n=$(( $(exp_refs) - before ))
  awk -v j="$j" -v d="$done_n" -v n="$n" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "-j %s: %s of %s experiments finished in %.0f s\n", j, d, n, t1 - t0 }'
  if [ "$done_n" -lt "$n" ]; then
    echo "error: $((n - done_n)) experiment(s) failed; see \`dvc queue status\` and \`dvc queue logs <name>\`" >&2
    exit 1
  fi
done
