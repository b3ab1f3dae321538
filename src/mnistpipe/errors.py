"""The user errors: `PipelineError` (a problem the user can fix, its message says how) and what to say about the
OS errors that writing an output can meet. `runner.run_stage` turns them into one line and an exit status.
"""

from __future__ import annotations

import errno
import os

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's convention

# What to do about the OS errors that writing an output can meet.
OS_ERROR_FIXES = {
    errno.ENOSPC: "free some disk space and rerun",
    errno.EDQUOT: "free some space within your disk quota and rerun",
    errno.EFBIG: "the file is larger than this system allows (ulimit -f?); raise the limit and rerun",
    errno.EROFS: "the file system is read-only; make it writable or run from a writable copy",
    errno.EACCES: "make it writable and rerun",
    errno.EPERM: "make it writable (and not immutable) and rerun",
    errno.EISDIR: "a directory is in the way; remove it and rerun",
    errno.ENOTDIR: "a file is in the way of a directory; remove it and rerun",
    errno.ENOTEMPTY: "a non-empty directory is in the way; remove it and rerun",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and rerun",
    errno.EIO: "the disk reported an input/output error; check it and rerun",
}


class PipelineError(Exception):
    """A problem the user can fix (bad data, bad params, missing inputs); the message says how."""


def describe_os_error(exc: OSError) -> str:
    """`exc`'s reason and how to fix it, in a few words (no file name: the caller names the output)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    fix = OS_ERROR_FIXES.get(exc.errno, "check that the location is writable and has free space, then rerun")
    return f"{reason} ({fix})"


def outputs_left() -> str:
    """What a failed or interrupted stage left of its outputs, and how to get them back.

    Run directly, a stage changes no output unless it finishes (its writes are renamed into place together at
    the end). Under `dvc repro` (DVC sets DVC_STAGE) DVC has already removed the stage's outputs before starting
    it, so they are gone either way; DVC's cache (`dvc checkout`) and git (`git restore`) still hold them.
    """
    stage = os.environ.get("DVC_STAGE", "").strip()
    if stage:
        return (f"dvc repro removed this stage's outputs before running it: `dvc checkout {stage}` brings back its "
                "cached ones and `git restore` the metrics and plots git keeps; a rerun makes new ones")
    return "every output is unchanged"
