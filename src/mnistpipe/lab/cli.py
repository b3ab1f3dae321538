"""What the lab's command lines share: params.yaml read once through the library's schema, the MNIST folder from
--mnist or MNIST_MIRROR, and the one error path (a `PipelineError` is one `error:` line and exit status 2)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from ..data import mirror_env, mirror_list
from ..errors import EXIT_USER_ERROR, PipelineError
from ..params import Params, parse


def read_params(path: str | os.PathLike) -> Params:
    """The params file at `path`, checked by `mnistpipe.params.parse`; a missing file names --params."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found; pass --params with the pipeline's params file")
    return parse(path.read_text(), source=str(path))


def mnist_source(given: str | None, *, environ: dict[str, str] | None = None) -> str:
    """The folder or URL of the MNIST .gz files: `given` (--mnist), else the MNIST_MIRROR variable."""
    if given:
        return given
    environ = os.environ if environ is None else environ
    variable = mirror_env("mnist")
    if environ.get(variable, "").strip():
        return mirror_list("mnist", environ=environ)[0]  # the list puts the variable's mirror first
    raise PipelineError(f"no MNIST files given: pass --mnist DIR (a folder or URL of the four MNIST .gz files) or "
                        f"set {variable}")


def run_cli(main: Callable[[], object]) -> None:
    """Run a lab command line: a `PipelineError` becomes one `error:` line and exit status 2."""
    try:
        main()
    except PipelineError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
