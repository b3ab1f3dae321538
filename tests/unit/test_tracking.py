"""mnistpipe.tracking: the dvclive folder a stage writes (per-epoch curves, summary, confusion rows), all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnistpipe import tracking


@pytest.fixture(autouse=True)
def _outside_the_repository(tmp_path, monkeypatch):
    # dvclive looks for a DVC repository from the working directory; the project's own must stay out of it.
    monkeypatch.chdir(tmp_path)


def _tsv(path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def test_epochs_and_summary_land_in_one_folder(tmp_path):
    out = tmp_path / "metrics" / "train"
    with tracking.live_log(out) as live:
        live.log_epoch(1, {"epoch": 1, "val_acc": 0.5, "train_loss": 2.0, "note": "text"})
        live.log_epoch(2, {"epoch": 2, "val_acc": 0.75, "train_loss": 1.0, "note": "text"})
        live.summary.update({"val_acc": 0.8, "train_seconds": 3.5}, epochs=2)
        assert not out.exists()  # swapped in only when the block ends
    summary = json.loads((out / "metrics.json").read_text())
    assert summary == {"val_acc": 0.8, "train_loss": 1.0, "step": 1, "train_seconds": 3.5, "epochs": 2}
    rows = _tsv(out / "plots" / "metrics" / "val_acc.tsv")
    assert rows == [["step", "val_acc"], ["0", "0.5"], ["1", "0.75"]]
    assert sorted(p.name for p in (out / "plots" / "metrics").iterdir()) == ["train_loss.tsv", "val_acc.tsv"]


def test_a_failed_block_leaves_the_previous_log(tmp_path):
    out = tmp_path / "log"
    with tracking.live_log(out) as live:
        live.log_epoch(1, {"val_acc": 0.5})
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="diverged"), tracking.live_log(out) as live:
        live.log_epoch(1, {"val_acc": 0.9})
        raise RuntimeError("diverged")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log"]  # no temporary folder left beside it


def test_confusion_rows_for_dvc_and_no_empty_summary(tmp_path):
    """What evaluate logs: one {actual, predicted} row per image, the data DVC's confusion template counts."""
    out = tmp_path / "evaluate"
    with tracking.live_log(out) as live:
        live.log_sklearn_plot("confusion_matrix", [3, 7, 0, 3], [5, 7, 0, 3], name="tuned")
        (Path(live.dir) / "extra.json").write_text("{}")
    rows = json.loads((out / "plots" / "sklearn" / "tuned.json").read_text())
    assert rows == [{"actual": "3", "predicted": "5"}, {"actual": "7", "predicted": "7"},
                    {"actual": "0", "predicted": "0"}, {"actual": "3", "predicted": "3"}]
    # Nothing was logged for metrics.json, so dvclive's empty one is gone; what the block wrote stays.
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "extra.json", "plots/sklearn/tuned.json"]
