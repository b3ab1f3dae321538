"""Per-epoch logging with dvclive, written atomically: a failed run leaves the previous logs untouched."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from .io import atomic_dir


@contextlib.contextmanager
def live_log(path: str | os.PathLike, *, summary: dict | None = None) -> Iterator[Callable[[int, dict], None]]:
    """Yield an `on_epoch(epoch, record)` callback that logs every numeric value of `record` with dvclive.

    The dvclive folder (`metrics.json` + `plots/metrics/*.tsv`) is built in a temporary folder and swapped in
    for `path` only when the block succeeds. `summary` (filled in by the caller before the block ends) is added
    to metrics.json, so one file holds the final metrics of the stage.
    """
    from dvclive import Live  # imported lazily: the benchmark entry point must run without dvclive

    with atomic_dir(path) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False, report=None)

        def on_epoch(epoch: int, record: dict) -> None:
            for key, value in record.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    live.log_metric(key, value)
            live.next_step()

        try:
            yield on_epoch
            for key, value in (summary or {}).items():
                live.summary[key] = value
        finally:
            live.end()
