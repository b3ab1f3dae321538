"""mnistpipe.inference and `mnistpipe-predict` (mnistpipe.commands.predict): drawn digits made into MNIST digits
(any size and mode), real MNIST digits through the whole preprocessing, and the command line in-process: its
table, CSV and JSON, and a one-line error with exit status 2 and no output written for every bad input.
tests/stages/test_predict_cli.py runs it on the pipeline's own models.
"""

from __future__ import annotations

import csv
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fitting import cnn_config, dae_config, fit_cnn
from PIL import Image, ImageDraw, ImageFile

from mnistpipe import inference, io, models, runner, train
from mnistpipe.commands import predict
from mnistpipe.errors import PipelineError

REPO_ROOT = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------------------------------------------
# drawing


def _strokes(shape: str, w: int, h: int) -> list[list[tuple[float, float]]]:
    """Polylines of a digit in a w x h canvas, with a margin so the digit sits somewhere inside it."""
    def pts(*xy):
        return [(x * w, y * h) for x, y in xy]
    return {
        "7": [pts((0.2, 0.2), (0.8, 0.2), (0.4, 0.85))],
        "1": [pts((0.45, 0.15), (0.55, 0.1), (0.55, 0.9))],
        "4": [pts((0.55, 0.1), (0.2, 0.6), (0.75, 0.6)), pts((0.6, 0.35), (0.6, 0.9))],
        "0": [pts((0.5, 0.1), (0.75, 0.3), (0.75, 0.7), (0.5, 0.9), (0.25, 0.7), (0.25, 0.3), (0.5, 0.1))],
    }[shape]


def draw(shape: str = "7", size: tuple[int, int] = (200, 300), *, mode: str = "L", paper=255, ink=0,
         stroke: float = 0.06) -> Image.Image:
    """A digit drawn with straight lines (not anti-aliased) of `ink` on `paper` in a `mode` image of `size`."""
    w, h = size
    im = Image.new(mode, size, paper)
    d = ImageDraw.Draw(im)
    for line in _strokes(shape, w, h):
        d.line(line, fill=ink, width=max(1, round(stroke * min(w, h))), joint="curve")
    return im


def sixteen_bit(im: Image.Image) -> Image.Image:
    """`im` (mode L) as a 16-bit grey image, the mode a 16-bit PNG opens in."""
    return Image.fromarray(np.asarray(im, dtype=np.uint16) * 257)


def palette_on_transparent() -> Image.Image:
    """The digit in a palette image whose background entry is transparent black (as many PNG exporters write)."""
    im = draw(mode="P", paper=0, ink=1)
    im.putpalette([0, 0, 0, 0, 0, 0])
    im.info["transparency"] = 0
    return im


VARIANTS = {
    # name: the same "7" as the reference (black on white, mode L), another way
    "white on black": lambda: draw(paper=0, ink=255),
    "RGB, navy ink": lambda: draw(mode="RGB", paper=(255, 255, 255), ink=(20, 20, 120)),
    "RGBA, transparent black paper": lambda: draw(mode="RGBA", paper=(0, 0, 0, 0), ink=(0, 0, 0, 255)),
    "LA, transparent black paper": lambda: draw(mode="LA", paper=(0, 0), ink=(0, 255)),
    "grey paper, dark grey ink": lambda: draw(paper=200, ink=60),
    "bilevel": lambda: draw(mode="1", paper=1, ink=0),
    "palette, transparent black paper": palette_on_transparent,
    "16-bit, grey on grey": lambda: sixteen_bit(draw(paper=200, ink=60)),
}


def center_of_mass(x: torch.Tensor) -> tuple[float, float]:
    a = x.squeeze().double()
    ys, xs = torch.meshgrid(torch.arange(28.0, dtype=torch.float64), torch.arange(28.0, dtype=torch.float64),
                            indexing="ij")
    return float((a * ys).sum() / a.sum()), float((a * xs).sum() / a.sum())


def ink_box(x: torch.Tensor) -> tuple[int, int]:
    """Height and width of the bounding box of the nonzero pixels."""
    rows = torch.nonzero(x.squeeze().any(1)).flatten()
    cols = torch.nonzero(x.squeeze().any(0)).flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def assert_mnist_like(x: torch.Tensor) -> None:
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.round(x * 255) / 255, x), "not on MNIST's 8-bit levels"
    assert float((x == 0).float().mean()) > 0.5, "the background is not black: inverted the wrong way?"
    h, w = ink_box(x)
    assert max(h, w) in (19, 20) and min(h, w) <= 20, f"digit box {h}x{w}, expected the longer side 20"
    cy, cx = center_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, f"centre of mass at ({cy:.2f}, {cx:.2f}), not (14, 14)"


# ----------------------------------------------------------------------------------------------------------------
# preprocessing


@pytest.mark.parametrize("shape", ["7", "1", "4", "0"])
@pytest.mark.parametrize("size", [(24, 32), (300, 200), (1000, 1400)])
def test_drawn_digits_become_mnist_digits(shape, size):
    x = inference.to_mnist(draw(shape, size))
    assert_mnist_like(x)
    h, w = ink_box(x)
    if shape == "1":
        assert w < h / 2, f"a '1' came out {h}x{w}: the aspect ratio was not kept"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_mode_and_background_gives_the_same_digit(variant):
    reference = inference.to_mnist(draw())
    assert_mnist_like(reference)
    x = inference.to_mnist(VARIANTS[variant]())
    assert torch.allclose(x, reference, atol=1e-6), f"{variant}: differs from black-on-white by " \
                                                    f"{float((x - reference).abs().max()):.3f}"


def test_position_and_margin_do_not_matter():
    """The same strokes in a corner of a big canvas or filling a small one give the same digit, within the
    anti-aliasing of two different scalings."""
    small = draw("4", (120, 120))
    big = Image.new("L", (900, 700), 255)
    big.paste(draw("4", (240, 240)).resize((120, 120), Image.Resampling.NEAREST), (700, 40))
    a, b = inference.to_mnist(small), inference.to_mnist(big)
    assert_mnist_like(b)
    assert float((a - b).abs().mean()) < 0.02


@pytest.mark.parametrize("image, needle", [
    (Image.new("L", (50, 50), 255), "is blank"),
    (Image.new("L", (50, 50), 0), "is blank"),
    (Image.new("RGB", (50, 50), (128, 128, 128)), "is blank"),
    (Image.new("RGBA", (50, 50), (0, 0, 0, 0)), "is blank"),  # fully transparent: white once composited
    (Image.fromarray(np.random.default_rng(0).integers(250, 256, (60, 60), dtype=np.uint8)), "is blank"),
    (Image.new("L", (1, 1), 0), "is blank"),
    (Image.new("L", (0, 0)), "is empty"),
])
def test_blank_and_empty_images_are_refused(image, needle):
    with pytest.raises(PipelineError, match=needle) as exc:
        inference.to_mnist(image, name="mine.png")
    assert "mine.png" in str(exc.value)


@pytest.fixture(scope="module")
def small_cnn(t10k):
    """A small CNN trained on 3000 real test digits for one epoch (about a second); weak but real."""
    images, labels = t10k
    x = images[:3000].unsqueeze(1).float() / 255
    config = cnn_config(kernel_size=3, stride=1, dropout=0.1, channels=(8, 16), hidden=32)
    model, _ = fit_cnn(x, labels[:3000], x[:200], labels[:200], config, lr=3e-3, epochs=1, batch_size=64, seed=0,
                       device="cpu")
    return model


def render(digit: np.ndarray, how: str) -> Image.Image:
    """A real MNIST digit (uint8 28x28, white on black) as a user might supply it."""
    big = Image.fromarray(digit).resize((100, 100), Image.Resampling.BICUBIC)
    if how == "black on white":
        return Image.fromarray(255 - np.asarray(big))
    if how == "white on black, 280 px":
        return Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR)
    if how == "RGBA ink on transparent":
        rgba = np.zeros((100, 100, 4), dtype=np.uint8)
        rgba[..., 3] = np.asarray(big)  # black ink whose opacity is the digit
        return Image.fromarray(rgba)
    raise ValueError(how)


@pytest.mark.parametrize("how", ["black on white", "white on black, 280 px", "RGBA ink on transparent"])
def test_real_digits_keep_their_prediction(t10k, small_cnn, how):
    """Real test digits enlarged, inverted or made transparent: the model predicts on the preprocessed image what
    it predicts on the original 28x28 digit, for nearly all of them."""
    images, labels = t10k
    originals = images[9000:9100]
    x = torch.stack([inference.to_mnist(render(d.numpy(), how)) for d in originals])
    assert_mnist_like(x[0])
    ours = [r["digit"] for r in inference.classify(small_cnn, x)]
    reference = train.predict(small_cnn, originals.unsqueeze(1).float() / 255).argmax(1).tolist()
    agree = float(np.mean([a == b for a, b in zip(ours, reference, strict=True)]))
    assert agree >= 0.9, f"{how}: only {agree:.0%} of the predictions agree with those on the original digits"
    assert float(np.mean([a == int(y) for a, y in zip(ours, labels[9000:9100], strict=True)])) >= 0.6


def test_classify_returns_sorted_top3(small_cnn, t10k):
    x = t10k[0][:20].unsqueeze(1).float() / 255
    out = inference.classify(small_cnn, x)
    probs = train.predict(small_cnn, x).softmax(1)
    assert len(out) == 20
    for r, p in zip(out, probs, strict=True):
        assert r["digit"] == int(p.argmax()) == r["top"][0][0]
        assert r["confidence"] == pytest.approx(float(p.max()))
        assert len(r["top"]) == 3 and len({d for d, _ in r["top"]}) == 3
        assert r["top"][0][1] >= r["top"][1][1] >= r["top"][2][1] >= 0


def test_denoise_is_the_autoencoder_on_8_bit_levels():
    torch.manual_seed(0)
    dae = models.DAE(dae_config(width=4)).eval()
    x = torch.rand(3, 1, 28, 28)
    out = inference.denoise(dae, x)
    assert out.shape == x.shape
    assert torch.allclose(out, train.predict(dae, x), atol=0.5 / 255 + 1e-6)
    assert torch.equal(torch.round(out * 255) / 255, out)


# ----------------------------------------------------------------------------------------------------------------
# files


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG of width x height declared in its header; its IDAT holds `rows` zero rows (all by default: a real
    bomb, a few kB that decode to width * height bytes), compressed without ever holding them in memory."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp, row, parts = zlib.compressobj(6), bytes(width + 1), []
    for _ in range(height if rows is None else rows):
        parts.append(comp.compress(row))
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height", [(9000, 9000), (100_000, 100_000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path, monkeypatch, width, height):
    """9000x9000 passes Pillow's own limit but not ours; 100000x100000 trips Pillow's. Neither is decoded."""
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(width, height, rows=None if width < 10_000 else 10))
    assert path.stat().st_size < 200_000

    def no_decoding(self):
        raise AssertionError("the image was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(PipelineError, match="too large to decode safely") as exc:
        inference.open_image(path)
    assert str(path) in str(exc.value)


def test_open_image_applies_exif_orientation(tmp_path):
    im = draw("1", (60, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "photo.jpg"
    im.save(path, "JPEG", quality=95, exif=exif)
    upright = inference.open_image(path)
    assert upright.size == (120, 60)


# ----------------------------------------------------------------------------------------------------------------
# the command line, in-process (run_stage around main, as the console script runs it)


def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mnistpipe-predict argv`, run in this process."""
    monkeypatch.delenv(runner.TRACEBACK_ENV, raising=False)
    monkeypatch.setattr("sys.argv", ["mnistpipe-predict", *argv])
    capsys.readouterr()
    try:
        runner.run_stage(predict.main)
        status = 0
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def models_dir(tmp_path, small_cnn):
    """A models folder as the pipeline leaves it: the small CNN as tuned.pt and a tiny autoencoder as dae.pt."""
    d = tmp_path / "models"
    io.save_checkpoint(d / "tuned.pt", small_cnn, kind="cnn", stage="select_cnn")
    torch.manual_seed(0)
    dae = models.DAE(dae_config(width=4))
    io.save_checkpoint(d / "dae.pt", dae, kind="dae", stage="train_dae")
    return d


@pytest.fixture
def digits_dir(tmp_path, t10k):
    """A folder of 9 real test digits as PNG and JPEG files in several modes, and a text file to be ignored."""
    d = tmp_path / "digits"
    d.mkdir()
    for i, digit in enumerate(t10k[0][9100:9109]):
        im = render(digit.numpy(), ["black on white", "white on black, 280 px", "RGBA ink on transparent"][i % 3])
        if i % 3 == 1:
            im.convert("RGB").save(d / f"d{i}.JPG", "JPEG", quality=95)
        else:
            im.save(d / f"d{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def test_cli_prints_table_and_writes_csv_and_json(tmp_path, models_dir, digits_dir, small_cnn, capsys, monkeypatch):
    extra = tmp_path / "seven.png"
    draw("7", (64, 64), mode="RGB", paper=(250, 250, 240), ink=(10, 10, 10)).save(extra)
    csv_path, json_path = tmp_path / "out" / "p.csv", tmp_path / "out" / "p.json"
    status, out, err = run_cli([str(digits_dir), str(extra), "--models-dir", str(models_dir), "--device", "cpu",
                                "--csv", str(csv_path), "--json", str(json_path)], capsys, monkeypatch)
    assert status == 0, err
    files = sorted(str(p) for p in digits_dir.iterdir() if p.suffix != ".txt") + [str(extra)]
    digits = torch.stack([inference.to_mnist(inference.open_image(Path(f))) for f in files])
    expected = inference.classify(small_cnn, digits)

    lines = out.splitlines()
    assert lines[0].split() == ["file", "digit", "confidence", "top-3"]
    assert len(lines) == 1 + len(files)
    for line, f, e in zip(lines[1:], files, expected, strict=True):
        cells = line.split()
        assert cells[0] == f and int(cells[1]) == e["digit"]
        assert cells[2] == f"{e['confidence']:.1%}"
        assert [int(d) for d in re.findall(r"(\d) [\d.]+%", line.split(None, 3)[3])] == [d for d, _ in e["top"]]

    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["file", "digit", "confidence", "digit_2", "confidence_2", "digit_3", "confidence_3"]
    assert [r["file"] for r in rows] == files
    assert [int(r["digit"]) for r in rows] == [e["digit"] for e in expected]
    assert [float(r["confidence"]) for r in rows] == pytest.approx([e["confidence"] for e in expected], abs=1e-6)
    assert all(float(r["confidence"]) >= float(r["confidence_2"]) >= float(r["confidence_3"]) for r in rows)

    doc = json.loads(json_path.read_text())
    assert doc["model"] == "tuned" and doc["denoise"] is False
    assert [p["file"] for p in doc["predictions"]] == files
    assert [[t["digit"] for t in p["top3"]] for p in doc["predictions"]] == [[d for d, _ in e["top"]]
                                                                              for e in expected]
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_cli_denoise_feeds_the_autoencoder_output(tmp_path, models_dir, digits_dir, small_cnn, capsys, monkeypatch):
    json_path = tmp_path / "p.json"
    status, _, err = run_cli([str(digits_dir), "--denoise", "--models-dir", str(models_dir), "--device", "cpu",
                              "--json", str(json_path)], capsys, monkeypatch)
    assert status == 0, err
    files = sorted(p for p in digits_dir.iterdir() if p.suffix != ".txt")
    dae = inference.load_model(models_dir, "dae")
    x = inference.denoise(dae, torch.stack([inference.to_mnist(inference.open_image(Path(f))) for f in files]))
    doc = json.loads(json_path.read_text())
    assert doc["denoise"] is True
    assert [p["digit"] for p in doc["predictions"]] == [r["digit"] for r in inference.classify(small_cnn, x)]


def _blank(path: Path) -> None:
    Image.new("L", (40, 40), 255).save(path)


def _good(path: Path) -> None:
    draw("7", (40, 40)).save(path)


# Each case: (files to create in the folder `in`, arguments, words the error line must hold). "GOOD" names a good
# digit image; the bad input sits beside it, so nothing may be written even though one image was fine.
BAD_INPUTS = {
    "missing file": ({}, ["in/nope.png"], ["in/nope.png not found"]),
    "text file named .png": ({"d.png": b"just text\n"}, ["in/d.png"], ["in/d.png is not a PNG or JPEG image"]),
    "GIF": ({"d.gif": "gif"}, ["in/d.gif"], ["is not a PNG or JPEG image"]),
    "empty file": ({"d.png": b""}, ["in/d.png"], ["in/d.png is empty (0 bytes)"]),
    "blank image": ({"d.png": _blank}, ["in"], ["in/d.png is blank"]),
    "truncated PNG": ({"d.png": "truncated"}, ["in"], ["in/d.png is damaged"]),
    "decompression bomb": ({"d.png": "bomb"}, ["in"], ["in/d.png is too large", "9000x9000"]),
    "over --max-pixels": ({"d.png": _good}, ["in", "--max-pixels", "1000"], ["at most 1000 pixels"]),
    "bad --max-pixels": ({}, ["in", "--max-pixels", "0"], ["--max-pixels must be between 1"]),
    "empty folder": ({"notes.txt": b"x"}, ["in"], ["folder in holds no .png, .jpg, .jpeg file"]),
    "no models": ({}, ["in", "--models-dir", "nomodels"], ["missing input nomodels/tuned.pt",
                                                             "dvc repro select_cnn"]),
    "autoencoder as the CNN": ({}, ["in", "--models-dir", "swapped"], ["'dae' model but a 'cnn' model"]),
    "checkpoint of another stage": ({}, ["in", "--model", "baseline"], ["models/baseline.pt was written by select_cnn",
                                                                         "dvc repro train_baseline"]),
    "damaged checkpoint": ({}, ["in", "--model", "noisy"], ["models/noisy.pt is corrupt", "train_on_noisy"]),
    "missing autoencoder": ({}, ["in", "--denoise", "--models-dir", "nodae"], ["missing input nodae/dae.pt",
                                                                                "dvc repro train_dae"]),
    "model of another dataset": ({}, ["in", "--models-dir", "fashion"], ["fashion/tuned.pt was trained on "
                                                                          "fashion-mnist, not on digits"]),
    "unknown model": ({}, ["in", "--model", "best"], ["argument --model: invalid choice: 'best'", "--help"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, models_dir, capsys, monkeypatch):
    files, args, needles = BAD_INPUTS[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    if case not in ("empty folder", "over --max-pixels"):
        _good(tmp_path / "in" / "a_good.png")
    for name, content in files.items():
        path = tmp_path / "in" / name
        if callable(content):
            content(path)
        elif content == "gif":
            draw().save(path, "GIF")
        elif content == "truncated":
            draw("7", (300, 300)).save(path)
            path.write_bytes(path.read_bytes()[:400])
        elif content == "bomb":
            path.write_bytes(bomb_png(9000, 9000))
        else:
            path.write_bytes(content)
    (tmp_path / "swapped").mkdir()
    (tmp_path / "swapped" / "tuned.pt").write_bytes((models_dir / "dae.pt").read_bytes())
    (tmp_path / "nodae").mkdir()
    (tmp_path / "nodae" / "tuned.pt").write_bytes((models_dir / "tuned.pt").read_bytes())
    (tmp_path / "fashion").mkdir()
    ckpt = torch.load(models_dir / "tuned.pt", weights_only=True)
    ckpt["meta"]["dataset"] = "fashion-mnist"
    torch.save(ckpt, tmp_path / "fashion" / "tuned.pt")
    (models_dir / "baseline.pt").write_bytes((models_dir / "tuned.pt").read_bytes())
    (models_dir / "noisy.pt").write_bytes((models_dir / "tuned.pt").read_bytes()[:1000])
    (tmp_path / "out.csv").write_text("old\n")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))

    status, out, err = run_cli([*args, "--csv", "out.csv", "--json", "out.json"], capsys, monkeypatch)
    assert status == 2, f"exit status {status}\n{out}\n{err}"
    lines = err.rstrip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    assert out == ""
    assert (tmp_path / "out.csv").read_text() == "old\n" and not (tmp_path / "out.json").exists()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_console_script_is_declared():
    text = (REPO_ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^mnistpipe-predict = "mnistpipe\.commands\.predict:cli"$', scripts, re.M)
    assert callable(predict.cli)
    for script, target in (("mnistpipe-tune-worker", "commands.tune_worker"),
                           ("mnistpipe-plots-template", "commands.plots_template")):
        assert re.search(rf'^{script} = "mnistpipe\.{target}:cli"$', scripts, re.M), script
