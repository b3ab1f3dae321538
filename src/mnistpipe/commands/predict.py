"""`mnistpipe-predict`: classify your own digit images (PNG or JPEG files, or folders of them) with a model the
pipeline trained.

    mnistpipe-predict my_digits/ seven.jpg --model tuned --csv predictions.csv

Each image is made into an MNIST digit as MNIST itself was made (`mnistpipe.inference.to_mnist`: grey levels,
light ink on black, cropped, scaled so its longer side is 20 pixels, centred by its centre of mass in 28x28).
`--denoise` passes the digits through the pipeline's denoising autoencoder first, as the `denoise` stage does.
This module is the command line only: it parses the arguments, calls `mnistpipe.inference` and prints or writes
the predictions.
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
from pathlib import Path

import torch
from PIL import Image

from .. import io
from ..errors import PipelineError
from ..inference import (
    DAE_NAME,
    MAX_PIXELS,
    MODEL_CHOICES,
    classify,
    denoise,
    list_images,
    load_model,
    open_image,
    to_mnist,
)
from ..runner import run_stage


def table(rows: list[dict]) -> str:
    """The predictions as an aligned text table: file, digit, confidence, top-3."""
    cells = [("file", "digit", "confidence", "top-3")]
    cells += [(r["file"], str(r["digit"]), f"{r['confidence']:.1%}",
               ", ".join(f"{d} {p:.1%}" for d, p in r["top"])) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3] for row in cells)
    return "\n".join(lines)


def to_csv(rows: list[dict]) -> str:
    """CSV with a header: file, digit, confidence, then the second and third most likely digits with theirs."""
    buf = _io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["file", "digit", "confidence", "digit_2", "confidence_2", "digit_3", "confidence_3"])
    for r in rows:
        out.writerow([r["file"], *(v for d, p in r["top"] for v in (d, f"{p:.6f}"))])
    return buf.getvalue()


def to_json(rows: list[dict], *, model: str, denoised: bool) -> str:
    """JSON: the model used, whether the digits were denoised, and one record per file with its top-3."""
    preds = [{"file": r["file"], "digit": r["digit"], "confidence": round(r["confidence"], 6),
              "top3": [{"digit": d, "confidence": round(p, 6)} for d, p in r["top"]]} for r in rows]
    return json.dumps({"model": model, "denoise": denoised, "predictions": preds}, indent=2) + "\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own error is two lines (usage and message)
        raise PipelineError(f"{message}; see `{self.prog} --help`")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of `mnistpipe-predict`."""
    ap = _Parser(prog="mnistpipe-predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="PNG or JPEG files, or folders of them (their .png/.jpg/.jpeg files)")
    ap.add_argument("--model", choices=MODEL_CHOICES, default="tuned",
                    help="which trained CNN (default: tuned); `denoised` was trained on denoised digits, so pair "
                         "it with --denoise")
    ap.add_argument("--models-dir", default="models", help="folder of the checkpoints (default: models)")
    ap.add_argument("--denoise", action="store_true", help="pass the digits through models/dae.pt first")
    ap.add_argument("--csv", metavar="PATH", help="also write the predictions as CSV")
    ap.add_argument("--json", metavar="PATH", help="also write the predictions as JSON")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="auto (default: CUDA when present), cpu or cuda")
    ap.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                    help=f"refuse larger images before decoding them (default: {MAX_PIXELS})")
    ap.add_argument("--traceback", action="store_true", help="show the traceback of a user error")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    """Classify the images of the command line; print the table, write the files asked for; return the rows."""
    args = parse_args(argv)
    if not 1 <= args.max_pixels <= Image.MAX_IMAGE_PIXELS:
        raise PipelineError(f"--max-pixels must be between 1 and {Image.MAX_IMAGE_PIXELS} (Pillow's own limit)")
    files = list_images(args.images)
    x = torch.stack([to_mnist(open_image(f, max_pixels=args.max_pixels), name=str(f)) for f in files])
    models_dir = Path(args.models_dir)
    model = load_model(models_dir, args.model)
    if args.denoise:
        x = denoise(load_model(models_dir, DAE_NAME), x, device=args.device)
    rows = [{"file": str(f), **r} for f, r in zip(files, classify(model, x, device=args.device), strict=True)]
    print(table(rows))
    if args.csv:
        io.write_text(args.csv, to_csv(rows))
    if args.json:
        io.write_text(args.json, to_json(rows, model=args.model, denoised=args.denoise))
    return rows


def cli() -> None:
    """Console-script entry point: user errors become one `error:` line and exit status 2."""
    run_stage(main)


if __name__ == "__main__":
    cli()
