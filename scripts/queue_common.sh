# Shared by the scripts that queue experiments (sourced, not run): the clean-workspace check and the count of
# finished experiments.

# Queued experiments run the committed state, so uncommitted changes would silently not take part.
require_clean_workspace() {
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "error: the workspace has uncommitted changes; commit them first (queued experiments run committed state)" >&2
    exit 2
  fi
}

# Finished experiments are git refs refs/exps/<xx>/<baseline>/<name>: counting them is much cheaper than
# `dvc queue status` (which also tells failed experiments, which leave no ref), so callers ask that only now and then.
exp_refs() {
  git for-each-ref --format='%(refname)' refs/exps/ | awk -F/ 'NF == 5 && $3 != "celery" && $3 != "stash"' | wc -l
}

# `dvc queue status` ends with "Worker status: N active, M idle". Tasks still queued with no worker at all (seen
# after a `dvc queue stop`) would never start: the waiting loops call this and stop with one line instead. A busy
# worker can miss the status call's ping and count as none, so only NO_WORKER_CHECKS answers in a row,
# all saying no worker, count.
NO_WORKER_CHECKS="${NO_WORKER_CHECKS:-3}"
NO_WORKER_PAUSE="${NO_WORKER_PAUSE:-10}"  # seconds between those answers
workers_running() {
  local workers
  workers="$(dvc queue status 2>/dev/null | sed -n 's/^Worker status: \([0-9]*\) active, \([0-9]*\) idle.*/\1 \2/p' |
             awk '{ print $1 + $2 }')"
  [ "${workers:-0}" -gt 0 ]
}
require_workers() {
  local i
  for ((i = 1; i <= NO_WORKER_CHECKS; i++)); do
    workers_running && return 0
    [ "$i" -lt "$NO_WORKER_CHECKS" ] && sleep "$NO_WORKER_PAUSE"
  done
  echo "error: experiments are still queued but no queue worker is running (stopped by \`dvc queue stop\`?); start one with \`dvc queue start\` or remove them with \`dvc queue remove --queued\`" >&2
  exit 2
}

# `dvc queue start -j N` with its output in a file: the workers it leaves behind inherit the output, and a pipe
# (a caller capturing this script's stderr) would stay open, and the caller waiting, for as long as they live.
start_workers() {
  local log
  log="$(mktemp)"
  if ! dvc queue start -j "$1" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
