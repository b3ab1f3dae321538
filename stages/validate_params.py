"""Check all of params.yaml (dvc.yaml makes this stage depend on the whole file, so any edit reruns it)."""

from common import load_params
from mnistpipe.runner import run_stage


def main() -> None:
    load_params()


if __name__ == "__main__":
    run_stage(main)
