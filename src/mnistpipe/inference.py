"""Digits from image files for the pipeline's models: MNIST's own preprocessing, classification and denoising.

Each image is made into an MNIST digit the way MNIST itself was made: grey levels, light ink on a black
background (a dark digit on a light background is inverted), cropped to the digit, scaled with anti-aliasing so
that its longer side is 20 pixels (aspect kept), and placed in a 28x28 field with its centre of mass at the
centre (`to_mnist`). `classify` scores digits with a trained CNN, `denoise` passes them through the denoising
autoencoder as the `denoise` stage does. `open_image`, `list_images` and `load_model` read the files a caller
names; the command line is `mnistpipe.commands.predict`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from . import io, models, tensors, train
from .errors import PipelineError

# The CNN checkpoints a user may classify with (the choices of `mnistpipe-predict --model`), and the autoencoder's.
MODEL_CHOICES = ("tuned", "baseline", "noisy", "denoised")
DAE_NAME = "dae"
FORMATS = ("PNG", "JPEG")
SUFFIXES = (".png", ".jpg", ".jpeg")
# 50 megapixels holds any phone photo; one decoded at this size already takes ~1 GB on its way to 28x28.
MAX_PIXELS = 50_000_000
SIDE, BOX = 28, 20  # MNIST: the digit's longer side is 20 pixels, in a 28x28 field
MIN_CONTRAST = 0.15  # below this (ink minus background, on a 0-1 scale) an image counts as blank
INK_LEVEL = 0.2  # a pixel belongs to the digit's bounding box above this fraction of the contrast
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# ----------------------------------------------------------------------------------------------------------------
# images and tensors in, tensors and dicts out


def grayscale(image: Image.Image, *, name: str = "image") -> np.ndarray:
    """Grey levels of `image` (any mode) as float32 in [0, 1], 0 = black; transparency is composited onto white."""
    if image.width == 0 or image.height == 0:
        raise PipelineError(f"{name} is empty ({image.width}x{image.height} pixels); pass an image of a digit")
    if image.mode in _SIXTEEN_BIT:
        # 16-bit PNGs open in these modes, and convert("L") would clip every level above 255 to white.
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    if "A" in image.mode or "a" in image.mode or "transparency" in image.info:
        # Transparent pixels carry arbitrary colours (often black); what a viewer shows is them over white.
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def center_digit(ink: np.ndarray, *, box: int = BOX, side: int = SIDE, ink_level: float = INK_LEVEL) -> np.ndarray:
    """MNIST's size normalisation of an ink map (float in [0, 1], digit bright on 0).

    Crops to the pixels above `ink_level`, scales the crop so its longer side is `box` pixels (aspect kept,
    anti-aliased), brings its darkest ink to 1 and places it in a `side` x `side` float32 array so that its centre
    of mass falls on pixel (side/2, side/2), where MNIST's digits have theirs.
    """
    mask = ink > ink_level
    if not mask.any():
        raise PipelineError("no pixel stands out as ink; pass an image of a digit")
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    crop = np.ascontiguousarray(ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], dtype=np.float32)
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, min(box, round(w * scale))), max(1, min(box, round(h * scale))))
    # Lanczos is PIL's old ANTIALIAS filter; it can ring slightly below 0 and above 1, hence the clip.
    small = np.clip(np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)), 0.0, 1.0)
    peak = small.max()
    if peak <= 0:
        raise PipelineError("the digit vanished when scaled to 20 pixels; draw it with thicker strokes")
    small = small / peak  # MNIST digits all reach full ink; a thin stroke scaled down would come out faint
    ys, xs = np.indices(small.shape)
    total = small.sum()
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    # Rounded shift as MNIST; clamped so a lopsided shape stays whole (a 20-pixel box leaves 8 pixels to move in).
    top = int(min(max(np.floor(side / 2 - cy + 0.5), 0), side - small.shape[0]))
    left = int(min(max(np.floor(side / 2 - cx + 0.5), 0), side - small.shape[1]))
    out = np.zeros((side, side), dtype=np.float32)
    out[top:top + small.shape[0], left:left + small.shape[1]] = small
    return out


def to_mnist(image: Image.Image, *, name: str = "image", min_contrast: float = MIN_CONTRAST) -> torch.Tensor:
    """`image` as an MNIST digit: a float32 tensor (1, 28, 28) in [0, 1], light ink on black, on 8-bit levels.

    The background is the median of the outermost pixels: when it is light the image is inverted, then it is
    subtracted and the ink stretched to the full range. An image whose ink stands out by less than `min_contrast`
    is blank, a user error naming `name`.
    """
    g = grayscale(image, name=name)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 0.5:
        g = 1.0 - g
        border = 1.0 - border
    background = float(np.median(border))
    contrast = float(g.max()) - background
    if contrast < min_contrast:
        raise PipelineError(
            f"{name} is blank: nothing stands out from its background (contrast {max(contrast, 0.0):.2f}, "
            f"at least {min_contrast} needed); pass an image with a dark digit on a light background or a light "
            "one on a dark background"
        )
    ink = np.clip((g - background) / contrast, 0.0, 1.0)
    try:
        digit = center_digit(ink)
    except PipelineError as exc:
        raise PipelineError(f"{name}: {exc}") from None
    # MNIST stores 8-bit levels and every model here trained on those, so the digit is rounded to them as well.
    return torch.from_numpy(np.round(digit * 255.0) / 255.0).float().unsqueeze(0)


@torch.no_grad()
def classify(model: torch.nn.Module, x: torch.Tensor, *, device: str = "cpu", top: int = 3) -> list[dict]:
    """Class probabilities of a CNN for images `x` (N, 1, 28, 28) in [0, 1].

    One dict per image: `digit` (the most likely class), `confidence` (its softmax probability) and `top`, the
    `top` most likely (digit, probability) pairs, most likely first.
    """
    probs = train.predict(model, x, device=device).softmax(1)
    p, idx = probs.topk(top, dim=1)
    return [{"digit": int(i[0]), "confidence": float(q[0]),
             "top": [(int(d), float(c)) for d, c in zip(i, q, strict=True)]} for i, q in zip(idx, p, strict=True)]


def denoise(dae: torch.nn.Module, x: torch.Tensor, *, device: str = "cpu") -> torch.Tensor:
    """Images `x` (N, 1, 28, 28) through the denoising autoencoder, rounded to 8-bit levels as the `denoise`
    stage stores them (the denoised-trained CNN saw those)."""
    return tensors.to_float(tensors.to_uint8(train.predict(dae, x, device=device)))


# ----------------------------------------------------------------------------------------------------------------
# files in: images and checkpoints


def open_image(path: Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The decoded PNG or JPEG at `path`, turned upright by its EXIF orientation.

    An image larger than `max_pixels` is refused from the size in its header, before anything is decoded (a
    decompression bomb: a few kB of PNG can hold gigabytes of pixels).
    """
    too_big = (f"{path} is too large to decode safely (a decompression bomb?); pass an image of at most "
               f"{max_pixels} pixels, or raise --max-pixels")
    try:
        nbytes = path.stat().st_size
    except FileNotFoundError:
        raise PipelineError(f"{path} not found; check the path") from None
    except OSError as exc:
        raise PipelineError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    if nbytes == 0:
        raise PipelineError(f"{path} is empty (0 bytes); pass a PNG or JPEG image of a digit")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice it; here anything past the limit is refused.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as im:  # lazy: reads the header only
                if im.width * im.height > max_pixels:
                    raise PipelineError(f"{too_big} (it has {im.width}x{im.height})")
                im.load()
                return ImageOps.exif_transpose(im)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PipelineError(too_big) from None
    except UnidentifiedImageError:
        raise PipelineError(f"{path} is not a PNG or JPEG image; pass a PNG or JPEG image of a digit") from None
    except PermissionError as exc:
        raise PipelineError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # what Pillow raises for damaged files
        raise PipelineError(f"{path} is damaged and cannot be decoded ({exc}); pass an intact PNG or JPEG") from None


def list_images(paths: list[str]) -> list[Path]:
    """The files named in `paths`, with each folder replaced by its .png/.jpg/.jpeg files (sorted, not recursive)."""
    files: list[Path] = []
    for arg in paths:
        p = Path(arg)
        if p.is_dir():
            found = sorted(q for q in p.iterdir()
                           if q.suffix.lower() in SUFFIXES and not q.name.startswith(".") and q.is_file())
            if not found:
                raise PipelineError(f"folder {p} holds no {', '.join(SUFFIXES)} file; pass image files or a "
                                    "folder of them")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise PipelineError(f"{p} not found; check the path")
    return files


def load_model(models_dir: Path, name: str) -> torch.nn.Module:
    """The pipeline's checkpoint `name` (a --model choice, or dae) from `models_dir`, checked for kind and stage."""
    producer = io.CHECKPOINT_PRODUCERS[name]
    kind = "dae" if name == DAE_NAME else "cnn"
    path = models_dir / f"{name}.pt"
    ckpt = io.load_checkpoint(path, kind=kind, producer=producer)
    dataset = (ckpt.get("meta") or {}).get("dataset", "mnist")
    if kind == "cnn" and dataset != "mnist":
        raise PipelineError(f"{path} was trained on {dataset}, not on digits; retrain it with `dataset: mnist`")
    return models.from_checkpoint(ckpt, path=str(path))
