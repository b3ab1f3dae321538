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
