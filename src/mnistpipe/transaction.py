"""All-or-nothing outputs: inside `transaction()`, every finished output is renamed into place at the very end.

`io.atomic_path` and `io.atomic_dir` write a temporary beside their target. Outside a transaction the temporary
is renamed onto the target as soon as its block ends. Inside one the rename waits until the transaction's block
ends without an exception; the commit then renames every output in the order they were finished, keeping each
previous version aside as `.NAME.old` until all are in place. If any rename fails, every output already renamed
is put back to its previous version, so a stage's outputs change together or not at all. `runner.run_stage`
opens a transaction around every stage.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PipelineError, describe_os_error

# A context variable, not a plain global: each thread (and each asyncio task) sees only its own transaction.
_CURRENT: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar("mnistpipe_transaction",
                                                                             default=None)


def remove(path: Path) -> None:
    """Delete a file, link or folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def old_path(path: Path) -> Path:
    """Where the previous version of `path` waits while a new one is renamed in."""
    return path.with_name(f".{path.name}.old")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while renaming: Ctrl-C lands before or after the commit, never inside it.

    The signals are caught and sent again once the block is done (a signal mask would not do: the kernel hands
    a process-wide signal to any thread that does not block it, torch's worker threads included).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None:  # None: installed outside Python, which signal.signal could not put back
            previous[signum] = signal.signal(signum, lambda s, _frame: caught.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


@dataclass
class _Pending:
    tmp: Path       # the finished temporary (absolute)
    final: Path     # where it goes (absolute)
    shown: str      # the target as the caller named it, for messages and the hook
    directory: bool
    aside: bool = False   # the previous version has been moved to .NAME.old
    placed: bool = False  # the temporary has been renamed onto `final`


@dataclass
class Transaction:
    """The outputs of one stage run, renamed together by `commit`."""

    pending: list[_Pending] = field(default_factory=list)
    scratch: set[Path] = field(default_factory=set)  # open or pending temporary folders (absolute)
    committed: bool = False

    def defers(self, path: str | os.PathLike) -> bool:
        """Whether an output at `path` waits for the commit: not when it lies inside another pending temporary,
        whose own rename carries it."""
        return not any(parent in self.scratch for parent in Path(os.path.abspath(path)).parents)

    def holds(self, tmp: Path) -> bool:
        """Whether `tmp` is a temporary this transaction still has to rename (stale-file cleanup must keep it)."""
        tmp = Path(os.path.abspath(tmp))
        return tmp in self.scratch or any(p.tmp == tmp for p in self.pending)

    def open_dir(self, tmp: Path) -> None:
        self.scratch.add(Path(os.path.abspath(tmp)))

    def drop_dir(self, tmp: Path) -> None:
        self.scratch.discard(Path(os.path.abspath(tmp)))

    def add(self, tmp: Path, final: str | os.PathLike, *, directory: bool) -> None:
        """Queue the finished temporary `tmp` to replace `final` at commit; a second write of `final` wins."""
        absolute = Path(os.path.abspath(final))
        for earlier in [p for p in self.pending if p.final == absolute]:
            self.pending.remove(earlier)
            self.scratch.discard(earlier.tmp)
            remove(earlier.tmp)
        self.pending.append(_Pending(Path(os.path.abspath(tmp)), absolute, str(final), directory))

    def abort(self) -> None:
        """Delete every temporary; no output changes."""
        for p in self.pending:
            remove(p.tmp)
        for tmp in self.scratch:
            remove(tmp)
        self.pending.clear()
        self.scratch.clear()

    def commit(self) -> None:
        """Rename every pending output into place, or, if one rename fails, put every output back as it was."""
        if not self.pending:
            self.committed = True
            return
        with signals_deferred():
            current = None
            try:
                for current in self.pending:
                    _place(current)
            except BaseException as exc:
                restored = self._roll_back()
                self.abort()
                if not isinstance(exc, OSError):
                    raise
                undo = ("every output of this run was put back to its previous version" if restored else
                        "some outputs could not be put back; rerun the stage")
                raise PipelineError(f"cannot write {current.shown}: {describe_os_error(exc)}; {undo}") from exc
            for p in self.pending:
                remove(old_path(p.final))
            self.pending.clear()
            self.scratch.clear()
            self.committed = True

    def _roll_back(self) -> bool:
        ok = True
        for p in reversed(self.pending):
            try:
                if p.placed:
                    remove(p.final)
                if p.aside:
                    os.replace(old_path(p.final), p.final)
            except OSError:
                ok = False  # `.NAME.old` stays; the next write of that output restores it (io._remove_stale)
        return ok


def _place(p: _Pending) -> None:
    old = old_path(p.final)
    remove(old)
    if not p.directory and p.final.is_dir() and not p.final.is_symlink():
        # os.replace would move a folder aside for a file; refuse, as it does outside a transaction.
        raise IsADirectoryError(21, "Is a directory", str(p.final))
    if p.final.exists() or p.final.is_symlink():
        os.replace(p.final, old)
        p.aside = True
    os.replace(p.tmp, p.final)
    p.placed = True


def current() -> Transaction | None:
    """The transaction open in this context, if any."""
    return _CURRENT.get()


@contextlib.contextmanager
def transaction() -> Iterator[Transaction]:
    """Defer the renames of every `atomic_path` / `atomic_dir` in the block and commit them together at its end.

    On an exception (KeyboardInterrupt included) every temporary is deleted and no output changes. A failed
    commit raises `PipelineError` after putting every output back. Nested transactions join the outer one.
    """
    outer = _CURRENT.get()
    if outer is not None:
        yield outer
        return
    txn = Transaction()
    token = _CURRENT.set(txn)
    try:
        try:
            yield txn
            txn.commit()
        except BaseException:
            txn.abort()
            raise
    finally:
        _CURRENT.reset(token)
