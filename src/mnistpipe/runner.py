"""One error path for every stage and command: user errors become one line on stderr and exit status 2, bugs keep
their traceback.

Ctrl-C (SIGINT) ends a stage with one line and exit status 130. Every stage runs inside a
`transaction.transaction()`, so a failed or interrupted stage run directly changes no output; under `dvc repro`,
DVC removes a stage's outputs before running it, and the message says how to get them back
(`errors.outputs_left`).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable

from .errors import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    OS_ERROR_FIXES,
    PipelineError,
    describe_os_error,
    outputs_left,
)
from .transaction import transaction

try:
    import resource  # POSIX only
except ImportError:  # Windows: peak_memory_mib asks psutil instead
    resource = None

TRACEBACK_ENV = "MNISTPIPE_TRACEBACK"


def _fail(message: str, status: int, show_tb: bool) -> None:
    if show_tb:
        traceback.print_exc()
    print(f"error: {' '.join(message.split())}", file=sys.stderr)  # always one line, whatever the message held
    sys.exit(status)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main` in a transaction, turning a `PipelineError` into a one-line message and exit status 2.

    Every output the stage writes with `io.atomic_path` / `io.atomic_dir` is renamed into place only when `main`
    returns, all together. An `OSError` that escapes (disk full, read-only file system) is a user error too, and
    Ctrl-C exits with status 130 and one line. Set MNISTPIPE_TRACEBACK=1 (or pass --traceback) to see the full
    traceback of a user error too.
    """
    show_tb = os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or "--traceback" in sys.argv
    t0 = time.perf_counter()
    txn = None
    try:
        with transaction() as txn:
            main()
    except PipelineError as exc:
        message = str(exc)
        if os.environ.get("DVC_STAGE", "").strip() and "dvc checkout" not in message:
            message += f" ({outputs_left()})"
        _fail(message, EXIT_USER_ERROR, show_tb)
    except KeyboardInterrupt:
        if txn is not None and txn.committed:
            _fail("interrupted (Ctrl-C) after all its outputs were written; rerun the stage to finish it",
                  EXIT_INTERRUPTED, show_tb)
        _fail(f"interrupted (Ctrl-C) before writing anything; {outputs_left()}; rerun the stage to finish it",
              EXIT_INTERRUPTED, show_tb)
    except OSError as exc:
        if exc.errno not in OS_ERROR_FIXES:
            raise  # FileNotFoundError and the like from a stage's own code are bugs: keep the traceback
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot access{where}: {describe_os_error(exc)}; {outputs_left()}", EXIT_USER_ERROR, show_tb)
    peak = peak_memory_mib()
    memory = f", peak memory {peak:.0f} MiB" if peak is not None else ""
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "stage"
    print(f"{stage}: done in {time.perf_counter() - t0:.1f} s{memory}", file=sys.stderr)


def peak_memory_mib() -> float | None:
    """This process's peak resident memory in MiB (for the README's resource table); None where unknown."""
    if resource is not None:
        # ru_maxrss counts bytes on macOS, KiB on Linux and the BSDs.
        unit = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    try:
        import psutil  # imported here: only Windows needs it (it comes with DVC)

        return psutil.Process().memory_info().peak_wset / 2**20  # peak_wset exists on Windows only
    except (ImportError, AttributeError):
        return None
