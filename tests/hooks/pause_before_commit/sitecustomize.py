"""Test-only fault injection, loaded by Python at start-up when this folder is on PYTHONPATH (tests/pipeline/
test_kills.py and tests/unit/test_io.py put it there): with MNISTPIPE_PAUSE_BEFORE_COMMIT=<file> set, a process
writes <file> (the outputs about to be replaced, one per line) right before it renames anything, then sleeps for
an hour, so a test can kill it in the window where every temporary is written and nothing is renamed.

Inside a transaction the pause comes before its commit; outside one, before the single rename. The library
itself knows nothing of this: the hook wraps `transaction.Transaction.commit` and `io._swap_in` as the modules
are imported.
"""

import importlib.abc
import importlib.util
import os
import sys
import time
from pathlib import Path

MARKER_ENV = "MNISTPIPE_PAUSE_BEFORE_COMMIT"
PAUSE_SECONDS = 3600


def _pause(paths) -> None:
    marker = os.environ.get(MARKER_ENV, "")
    if not marker:
        return
    part = f"{marker}.{os.getpid()}.part"
    # Written under another name and renamed, so a test polling for the file never reads half of it.
    with open(part, "w", encoding="utf-8") as f:
        f.write("".join(f"{p}\n" for p in paths))
        f.flush()
        os.fsync(f.fileno())
    os.replace(part, marker)
    time.sleep(PAUSE_SECONDS)


def _patch_transaction(module) -> None:
    commit = module.Transaction.commit

    def paused_commit(self):
        if self.pending:
            _pause([Path(p.shown) for p in self.pending])
        return commit(self)

    module.Transaction.commit = paused_commit


def _patch_io(module) -> None:
    swap_in = module._swap_in

    def paused_swap_in(tmp, path, *, directory, txn):
        if txn is None:  # inside a transaction, its commit pauses
            _pause([path])
        return swap_in(tmp, path, directory=directory, txn=txn)

    module._swap_in = paused_swap_in


PATCHES = {"mnistpipe.transaction": _patch_transaction, "mnistpipe.io": _patch_io}


class _Loader(importlib.abc.Loader):
    def __init__(self, loader, patch):
        self.loader, self.patch = loader, patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        self.patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader, PATCHES[name])
        return spec


if os.environ.get(MARKER_ENV):
    sys.meta_path.insert(0, _Finder())
