"""Atomic file output, tensor files and checkpoints.

Every writer goes through `atomic_path`: the file is written under a temporary name in the same directory
and renamed into place only when complete, so a crash never leaves a file that looks finished.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import PipelineError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Delete temporaries that a killed run (SIGKILL skips every cleanup) left beside `path`."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        _remove(stale)
    _remove(path.with_name(f".{path.name}.old"))


def _temp_beside(path: Path, *, directory: bool) -> Path:
    """A new temporary file or folder in `path`'s directory, with the usual permissions (mkstemp gives 0600)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        else:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            os.close(fd)
            tmp = Path(name)
        os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())
        return tmp
    except OSError as exc:
        raise PipelineError(
            f"cannot write {path}: {exc.strerror or exc}; make its directory writable or choose another location"
        ) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp = _temp_beside(path, directory=False)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary directory next to `path`; swap it in for `path` only if the block succeeds."""
    path = Path(path)
    tmp = _temp_beside(path, directory=True)
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, *, producer: str) -> Any:
    """Read a JSON file written by stage `producer`; a missing or unreadable file is a user error."""
    path = require(path, producer=producer)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path} is not valid JSON ({exc}); rerun `dvc repro {producer}`") from exc


def require(path: str | os.PathLike, *, producer: str) -> Path:
    """Return `path` if it exists, else raise an error naming the stage that makes it."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"missing input {path}: run `dvc repro {producer}` first")
    return path


def save_tensors(path: str | os.PathLike, tensors: dict[str, Any]) -> None:
    """Save a dict of tensors (and plain values) atomically with torch.save; same tensors, same bytes."""
    # torch.save names the zip's inner folder after the file it writes (here a random temp name), which
    # would give every run a new DVC hash; saving to a buffer keeps the bytes reproducible.
    buf = io.BytesIO()
    torch.save(tensors, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def load_tensors(path: str | os.PathLike, *, producer: str) -> dict[str, Any]:
    """Load a file written by `save_tensors`; never unpickles arbitrary objects (weights_only=True)."""
    path = require(path, producer=producer)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise PipelineError(
            f"{path} is corrupt or not a tensor file ({type(exc).__name__}); delete it and rerun `dvc repro {producer}`"
        ) from exc


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, kind: str, config: dict,
                    meta: dict | None = None) -> None:
    """Save the model's config and state_dict (tensors on CPU) atomically.

    Timings (keys ending in `_seconds`) are left out of `meta`: they differ on every run, and the same weights
    must give the same bytes, or DVC would see a new checkpoint and rerun everything downstream.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {k: v for k, v in (meta or {}).items() if not k.endswith("_seconds")}
    save_tensors(path, {"kind": kind, "config": dict(config), "state_dict": state, "meta": meta})


def load_checkpoint(path: str | os.PathLike, *, kind: str, producer: str) -> dict[str, Any]:
    """Load a checkpoint of the given `kind` ("cnn" or "dae") and check its structure."""
    ckpt = load_tensors(path, producer=producer)
    if not isinstance(ckpt, dict) or not {"kind", "config", "state_dict"} <= set(ckpt):
        raise PipelineError(f"{path} is not a checkpoint of this project; rerun `dvc repro {producer}`")
    if ckpt["kind"] != kind:
        raise PipelineError(
            f"{path} holds a {ckpt['kind']!r} model but a {kind!r} model is expected; rerun `dvc repro {producer}`"
        )
    return ckpt
