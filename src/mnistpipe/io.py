"""Atomic file output, tensor files and checkpoints.

Every writer goes through `atomic_path` (or `atomic_dir` for a folder): the output is written under a temporary
name in the same directory and renamed into place only when complete, so a crash never leaves a file that looks
finished. Inside a `transaction.transaction()` (every stage runs in one) the renames wait until the stage ends
and happen together, so a stage's outputs change together or not at all.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from . import transaction
from .errors import PipelineError, describe_os_error, outputs_left

# The pipeline's checkpoints by name (models/<name>.pt) and the stage that writes each: the stage that a
# "rerun `dvc repro <stage>`" message names when one is missing or stale.
CHECKPOINT_PRODUCERS = {"baseline": "train_baseline", "search_best": "tune_cnn", "tuned": "select_cnn",
                        "noisy": "train_on_noisy", "dae": "train_dae", "denoised": "train_on_denoised"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale(path: Path) -> None:
    """Clean up what a killed run (SIGKILL skips every cleanup) left beside `path`.

    Its temporaries go. A `.NAME.old` is the previous version of `path`, moved aside by a commit that was killed
    before it finished: it comes back when `path` itself is missing, else it goes.
    """
    txn = transaction.current()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if txn is None or not txn.holds(stale):
            transaction.remove(stale)
    old = transaction.old_path(path)
    if (old.exists() or old.is_symlink()) and not (path.exists() or path.is_symlink()):
        os.replace(old, path)
    transaction.remove(old)


def _write_error(path: Path, exc: OSError) -> PipelineError:
    return PipelineError(f"cannot write {path}: {describe_os_error(exc)}; {outputs_left()}")


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


def _swap_in(tmp: Path, path: Path, *, directory: bool, txn: transaction.Transaction | None) -> None:
    """Rename the finished `tmp` onto `path` now (no transaction, or `path` lies inside a pending temporary)."""
    try:
        if not directory:
            os.replace(tmp, path)
            return
        old = transaction.old_path(path)
        transaction.remove(old)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(tmp, path)
        transaction.remove(old)
    except OSError as exc:
        raise _write_error(path, exc) from exc


@contextlib.contextmanager
def _atomic(path: str | os.PathLike, *, directory: bool) -> Iterator[Path]:
    """The temporary file or folder beside `path` that replaces it once the block succeeds (see `atomic_path`,
    `atomic_dir`); on failure it is removed and `path` is left as it was."""
    path = Path(path)
    txn = transaction.current()
    tmp = _temp_beside(path, directory=directory)
    # A folder is registered while it is written, so outputs written inside it rename at once (it carries them).
    opened = directory and txn is not None and txn.defers(path)
    if opened:
        txn.open_dir(tmp)
    handed_over = False
    try:
        try:
            yield tmp
        except OSError as exc:
            raise _write_error(path, exc) from exc
        if txn is not None and (opened or (not directory and txn.defers(path))):
            txn.add(tmp, path, directory=directory)
            handed_over = True
        else:
            _swap_in(tmp, path, directory=directory, txn=txn)
    finally:
        if not handed_over:
            if opened:
                txn.drop_dir(tmp)
            transaction.remove(tmp)


def atomic_path(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Inside a transaction the rename waits for the transaction's commit. An OSError in the block (disk full...)
    becomes a `PipelineError` naming `path`.
    """
    return _atomic(path, directory=False)


def atomic_dir(path: str | os.PathLike) -> contextlib.AbstractContextManager[Path]:
    """Yield a fresh temporary directory next to `path`; swap it in for `path` only if the block succeeds.

    Inside a transaction the swap waits for the transaction's commit; outputs written inside the temporary
    directory are renamed within it at once, since the directory's own swap carries them.
    """
    return _atomic(path, directory=True)


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


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, kind: str, meta: dict | None = None,
                    stage: str | None = None) -> None:
    """Save the model's config (`model.config`, a params.CNNConfig or DAEConfig, stored as a plain dict so that a
    weights_only load reads it) and state_dict (tensors on CPU) atomically; `stage` records who wrote it.

    Timings (keys ending in `_seconds`) are left out of `meta`: they differ on every run, and the same weights
    must give the same bytes, or DVC would see a new checkpoint and rerun everything downstream.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {k: v for k, v in (meta or {}).items() if not k.endswith("_seconds")}
    ckpt = {"kind": kind, "config": model.config.model_dump(mode="json"), "state_dict": state, "meta": meta}
    if stage is not None:
        ckpt["stage"] = stage
    save_tensors(path, ckpt)


def load_checkpoint(path: str | os.PathLike, *, kind: str, producer: str) -> dict[str, Any]:
    """Load a checkpoint of the given `kind` ("cnn" or "dae") written by stage `producer`; check its structure.

    A checkpoint that records another stage (models/tuned.pt copied over models/baseline.pt) is refused; one that
    records none (saved by a library user without `stage`) is accepted.
    """
    ckpt = load_tensors(path, producer=producer)
    if not isinstance(ckpt, dict) or not {"kind", "config", "state_dict"} <= set(ckpt):
        raise PipelineError(f"{path} is not a checkpoint of this project; rerun `dvc repro {producer}`")
    if ckpt["kind"] != kind:
        raise PipelineError(
            f"{path} holds a {ckpt['kind']!r} model but a {kind!r} model is expected; rerun `dvc repro {producer}`"
        )
    made_by = ckpt.get("stage")
    if made_by is not None and made_by != producer:
        raise PipelineError(f"{path} was written by {made_by}, not {producer}; rerun `dvc repro {producer}`")
    return ckpt
