"""dvclive logging, written atomically: a failed run leaves the previous logs untouched."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .io import atomic_dir


class LiveLog:
    """A dvclive `Live` (`summary`, `log_sklearn_plot`, `dir`, ... pass straight through) plus `log_epoch`, the
    per-epoch callback that the trainers take."""

    def __init__(self, live: Any) -> None:
        self.live = live

    def __getattr__(self, name: str) -> Any:
        # Looked up on every access: dvclive replaces its `summary` dict whenever a metric is logged.
        return getattr(self.live, name)

    def log_epoch(self, epoch: int, record: dict) -> None:
        """Log every numeric value of `record` as one dvclive step (`epoch` itself is the step)."""
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.live.log_metric(key, value)
        self.live.next_step()


@contextlib.contextmanager
def live_log(path: str | os.PathLike) -> Iterator[LiveLog]:
    """Yield a `LiveLog` whose dvclive folder becomes `path` when the block succeeds.

    The folder (`metrics.json`, `plots/metrics/*.tsv` from `log_epoch`, `plots/sklearn/*.json` from
    `log_sklearn_plot`, and anything else the block writes under `live.dir`) is built in a temporary folder and
    swapped in for `path` only at the end. Whatever the block sets in `live.summary` (final metrics) joins the
    last epoch's values in metrics.json, so one file holds the stage's results.
    """
    from dvclive import Live  # imported lazily: the benchmark entry point must run without dvclive

    with atomic_dir(path) as tmp:
        live = Live(str(tmp), dvcyaml=False, save_dvc_exp=False, report=None)
        try:
            yield LiveLog(live)
        finally:
            live.end()
        if not live.summary:
            # A log of plots only (evaluate's confusion rows): dvclive would still leave an empty metrics.json.
            Path(live.metrics_file).unlink(missing_ok=True)
