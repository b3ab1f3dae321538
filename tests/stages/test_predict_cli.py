"""`python -m mnistpipe.commands.predict` with the models of the reproduced tiny pipeline (`tiny_repo`): real test
digits saved as PNG and JPEG files the way a user would have them, the table, CSV and JSON of a real process,
`--denoise` with the pipeline's autoencoder, and a checkpoint of the wrong kind refused by a real process. The tiny
repository is only read: every file the tests write lies in their own temporary folder.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistpipe import inference, runner, train
from mnistpipe.commands import predict


def save_as_user_images(digits: torch.Tensor, folder: Path) -> list[Path]:
    """Real MNIST digits (uint8, white on black) enlarged, as black on white PNG, white on black JPEG or black ink
    on a transparent PNG; the files in the order the command lists them."""
    folder.mkdir()
    paths = []
    for i, d in enumerate(digits.numpy()):
        big = np.asarray(Image.fromarray(d).resize((100, 100), Image.Resampling.BICUBIC))
        path = folder / f"digit{i:02d}{('.png', '.jpg', '.png')[i % 3]}"
        if i % 3 == 0:
            Image.fromarray(255 - big).save(path)
        elif i % 3 == 1:
            Image.fromarray(big).convert("RGB").save(path, "JPEG", quality=95)
        else:
            rgba = np.zeros((100, 100, 4), dtype=np.uint8)
            rgba[..., 3] = big
            Image.fromarray(rgba).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def test_digits(tiny_repo) -> torch.Tensor:
    return torch.load(tiny_repo / "data" / "prepared" / "test.pt", weights_only=True)["x_test"][:30]


def test_predict_real_digits_with_the_pipeline_model(tiny_repo, test_digits, tmp_path, helpers):
    files = save_as_user_images(test_digits, tmp_path / "digits")
    csv_path, json_path = tmp_path / "p.csv", tmp_path / "p.json"
    before = helpers.git(tiny_repo, "status", "--porcelain").stdout
    proc = helpers.sh([sys.executable, "-m", "mnistpipe.commands.predict", str(tmp_path / "digits"), "--device", "cpu",
                       "--csv", str(csv_path), "--json", str(json_path)], tiny_repo)
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr
    assert helpers.git(tiny_repo, "status", "--porcelain").stdout == before

    doc = json.loads(json_path.read_text())
    assert doc["model"] == "tuned" and doc["denoise"] is False
    preds = doc["predictions"]
    assert [p["file"] for p in preds] == [str(f) for f in files]
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["digit"]) for r in rows] == [p["digit"] for p in preds]
    table = proc.stdout.splitlines()
    assert table[0].split() == ["file", "digit", "confidence", "top-3"] and len(table) == 1 + len(files)
    assert [int(line.split()[1]) for line in table[1:]] == [p["digit"] for p in preds]

    # The tiny pipeline's model is barely trained, so whether it keeps its predictions is checked with a real model
    # in tests/unit/commands/test_predict.py; here the process must give what the library gives on the same files.
    # Another thread count may flip a near-tie, hence probabilities compared, not only digits.
    model = inference.load_model(tiny_repo / "models", "tuned")
    x = torch.stack([inference.to_mnist(inference.open_image(f)) for f in files])
    probs = torch.softmax(train.predict(model, x), 1)
    for p, q in zip(preds, probs, strict=True):
        assert p["confidence"] == pytest.approx(float(q.max()), abs=1e-4)
        assert float(q[p["digit"]]) == pytest.approx(float(q.max()), abs=1e-4)
        assert [t["confidence"] for t in p["top3"]] == pytest.approx([float(q[t["digit"]]) for t in p["top3"]],
                                                                     abs=1e-4)


def test_denoise_with_the_pipeline_autoencoder(tiny_repo, test_digits, tmp_path, capsys, monkeypatch):
    files = save_as_user_images(test_digits[:6], tmp_path / "digits")
    json_path = tmp_path / "p.json"
    monkeypatch.delenv(runner.TRACEBACK_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["mnistpipe-predict", str(tmp_path / "digits"), "--model", "denoised",
                                     "--denoise", "--models-dir", str(tiny_repo / "models"), "--device", "cpu",
                                     "--json", str(json_path)])
    runner.run_stage(predict.main)
    models_dir = tiny_repo / "models"
    x = torch.stack([inference.to_mnist(inference.open_image(f)) for f in files])
    denoised = inference.denoise(inference.load_model(models_dir, "dae"), x)
    assert not torch.equal(denoised, x)
    expected = inference.classify(inference.load_model(models_dir, "denoised"), denoised)
    doc = json.loads(json_path.read_text())
    assert doc["model"] == "denoised" and doc["denoise"] is True
    assert [p["digit"] for p in doc["predictions"]] == [r["digit"] for r in expected]


def test_wrong_kind_of_checkpoint_is_refused_by_the_command(tiny_repo, test_digits, tmp_path, helpers):
    save_as_user_images(test_digits[:2], tmp_path / "digits")
    (tmp_path / "models").mkdir()
    shutil.copyfile(tiny_repo / "models" / "dae.pt", tmp_path / "models" / "tuned.pt")
    proc = helpers.sh([sys.executable, "-m", "mnistpipe.commands.predict", "digits", "--json", "p.json"], tmp_path,
                      env={"PYTHONPATH": str(tiny_repo / "src")})
    assert proc.returncode == 2, proc.stderr
    helpers.one_line_error(proc.stderr, "models/tuned.pt", "'dae' model", "dvc repro select_cnn")
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "models"]
