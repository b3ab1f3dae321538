#!/usr/bin/env bash
# Seed-averaged comparison of the baseline with and without dropout: queue SEEDS x DROPOUTS experiments of TARGET,
# run them with `dvc queue start -j JOBS`, wait, and print the markdown table of `python -m mnistpipe.lab.seedgrid`.
#
#   scripts/seed_grid.sh                                     # 5 seeds x dropout 0 / 0.25 of train_baseline, -j 2
#   README=docs/seed-grid.md scripts/seed_grid.sh            # also write the table into docs/seed-grid.md's seedgrid block
#   SUMMARY=benchmarks/seed-grid-dropout.json scripts/seed_grid.sh  # also the JSON the report stage shows
#   SEEDS=0,1 DROPOUTS=0,0.5 JOBS=1 scripts/seed_grid.sh     # another grid
#
# Run it from the root of a committed, reproduced checkout (the queue runs the committed state). Only the
# experiments queued here are tabulated, so older experiments of the same commit do not mix in. Each one reruns
# `download` (the train/val split depends on the seed) and `train_baseline`; a point the run-cache knows (the
# committed params, say) is restored instead. Queue workers inherit this environment: MNIST_MIRROR, and
# OMP_NUM_THREADS to give each of the JOBS experiments its share of the cores.
set -euo pipefail

seeds="${SEEDS:-0,1,2,3,4}"
dropouts="${DROPOUTS:-0,0.25}"
jobs="${JOBS:-2}"
target="${TARGET:-train_baseline}"
metric="${METRIC:-metrics/train_baseline/metrics.json:val_acc}"
python="${PYTHON:-python}"

. "$(dirname "$0")/queue_common.sh"
require_clean_workspace

active() {  # names of our experiments still queued or running
  dvc queue status 2>/dev/null | awk -v names=" $names " \
    '($NF == "Queued" || $NF == "Running") && index(names, " " $2 " ") { print $2 }'
}
names=""
cleanup() {
  local left
  left="$(active || true)"
  # shellcheck disable=SC2086  # one word per experiment name
  [ -z "$left" ] || dvc queue kill $left >/dev/null 2>&1 || true
  dvc queue stop >/dev/null 2>&1 || true
}

before="$(exp_refs)"
queued="$(dvc exp run --queue -S "seed=$seeds" -S "dropout=$dropouts" "$target")"
names="$(printf '%s\n' "$queued" | sed -n "s/^Queued experiment '\(.*\)' for future execution\.$/\1/p" | tr '\n' ' ')"
n="$(printf '%s\n' $names | grep -c . || true)"
want=$(( $(tr ',' '\n' <<<"$seeds" | grep -c .) * $(tr ',' '\n' <<<"$dropouts" | grep -c .) ))
if [ "$n" -ne "$want" ]; then
  echo "error: queued $n experiments instead of $want (seeds $seeds x dropouts $dropouts); see \`dvc queue status\`" >&2
  cleanup
  exit 1
fi
trap cleanup EXIT
echo "queued $n experiments: $names" >&2

t0="$(date +%s)"
start_workers "$jobs"
next_status=$(( $(date +%s) + 15 ))
while :; do
  if [ "$(exp_refs)" -ge $((before + n)) ] || [ "$(date +%s)" -ge "$next_status" ]; then
    [ -n "$(active)" ] || break
    require_workers
    next_status=$(( $(date +%s) + 15 ))
  fi
  sleep 2
done
echo "the queue finished in $(( $(date +%s) - t0 )) s" >&2

"$python" -m mnistpipe.lab.seedgrid --metric "$metric" --by dropout --percent --exp "${names// /,}" \
  ${README:+--readme "$README"} ${SUMMARY:+--summary "$SUMMARY" --commit "$(git rev-parse HEAD)"}
