"""User commands: thin command lines over library functions (predict, tune worker, dvc-plots template)."""
