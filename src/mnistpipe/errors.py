"""One error path: user errors become one line on stderr and exit status 2; bugs keep their traceback."""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from collections.abc import Callable

TRACEBACK_ENV = "MNISTPIPE_TRACEBACK"


class PipelineError(Exception):
    """A problem the user can fix (bad data, bad params, missing inputs); the message says how."""


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's `main`, turning a `PipelineError` into a one-line message and exit status 2.

    Set MNISTPIPE_TRACEBACK=1 (or pass --traceback) to see the full traceback of a user error too.
    """
    show_tb = os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or "--traceback" in sys.argv
    t0 = time.perf_counter()
    try:
        main()
    except PipelineError as exc:
        if show_tb:
            traceback.print_exc()
        message = " ".join(str(exc).split())  # always one line, whatever the message contained
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    # ru_maxrss is in KiB on Linux: the stage's peak memory, for the README's resource table.
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0] or "stage"
    print(f"{stage}: done in {time.perf_counter() - t0:.1f} s, peak memory {peak_mb:.0f} MiB", file=sys.stderr)
