"""t-SNE at equal quality, faster: time each way of embedding (plots.TSNE_METHODS) and score it by trustworthiness.

Each method runs in a fresh process of its own, one after another, so that no method's threads, heap or
imports slow another; the time is the wall time of the embedding alone (PCA included for the PCA variants,
imports excluded). Afterwards `sklearn.manifold.trustworthiness` scores every embedding against the RAW pixels
(whatever the method embedded), with TRUST_NEIGHBORS neighbours: how far the embedding's nearest neighbours
are also near in pixel space, 1.0 meaning that every one is.

    python -m mnistpipe.lab.bench_tsne [--mnist DIR] --n 10000 --threads 2 --json out.json

The MNIST files come from --mnist, else from the folder the MNIST_MIRROR variable names.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PipelineError
from ..plots import TSNE_METHODS, _pixels, tsne_embed
from ..runner import peak_memory_mib
from .cli import mnist_source, run_cli

# The reference of speed and quality: sklearn's Barnes-Hut t-SNE on the raw pixels, the plainest way to embed;
# every other method's speed and trustworthiness are compared with it.
REFERENCE_METHOD = "sklearn-bh-raw"
# Neighbours of the trustworthiness score. sklearn's default is 5; 10 looks a little further than the closest
# few while staying well inside the ~3 x perplexity = 90 neighbours whose affinities t-SNE fits.
TRUST_NEIGHBORS = 10
# How much trustworthiness a faster method may lose and still win: about what the seed alone moves it. On the
# first 2,000 MNIST test images, seeds 0-4 gave scores spread over 0.001 (sklearn-bh-raw) to 0.004
# (pca50+opentsne-fft); a smaller loss than this cannot be told from chance without many seeds per method.
TOLERANCE = 0.005


def available(method: str) -> str | None:
    """None when `method` can run here, else why not (openTSNE is an optional import, absent from some images)."""
    if method not in TSNE_METHODS:
        return f"unknown method; use one of {', '.join(TSNE_METHODS)}"
    if "opentsne" in method and importlib.util.find_spec("openTSNE") is None:
        return "openTSNE is not installed (pip install openTSNE)"
    return None


def _timed(x: np.ndarray, method: str, seed: int, threads: int, perplexity: float,
           max_iter: int) -> tuple[np.ndarray, float]:
    """Run in a worker process: the embedding and its wall seconds, the libraries imported before the clock."""
    import sklearn.decomposition  # noqa: F401  (imported only to keep import time out of the measurement)
    import sklearn.manifold  # noqa: F401

    if "opentsne" in method:
        import openTSNE  # noqa: F401
    t0 = time.perf_counter()
    emb = tsne_embed(x, perplexity=perplexity, seed=seed, max_iter=max_iter, n_jobs=threads, method=method)
    return emb, time.perf_counter() - t0


def run(x: np.ndarray, *, methods: Sequence[str] = TSNE_METHODS, seed: int = 0, threads: int = 2,
        perplexity: float = 30.0, max_iter: int = 500, trust_neighbors: int = TRUST_NEIGHBORS,
        trust_size: int | None = None) -> dict[str, Any]:
    """Embed the images `x` by each of `methods` and score each embedding.

    Returns {"n", "threads", "seed", "perplexity", "max_iter", "trust_neighbors", "trust_size", "methods":
    {method: {"seconds", "trustworthiness", "speedup"} or {"unavailable": reason}}}; "speedup" is
    REFERENCE_METHOD's seconds over the method's, when REFERENCE_METHOD is among those measured. `trust_size`
    scores a fixed seeded subset of that many images instead of all of them (sklearn's score holds three N x N
    matrices, ~2 GB at N = 10,000).
    """
    from sklearn.manifold import trustworthiness

    a = _pixels(x).reshape(len(x), -1)
    if not methods:
        raise PipelineError("no t-SNE method to compare; name at least one of " + ", ".join(TSNE_METHODS))
    unknown = [m for m in methods if m not in TSNE_METHODS]
    if unknown:
        raise PipelineError(f"unknown t-SNE method(s) {', '.join(unknown)}; use some of {', '.join(TSNE_METHODS)}")
    if trust_size is not None and trust_size < 1:
        raise PipelineError(f"trust_size={trust_size} must be positive; leave it out to score every image")
    subset = np.arange(len(a))
    if trust_size is not None and trust_size < len(a):
        subset = np.sort(np.random.default_rng(seed).choice(len(a), trust_size, replace=False))
    if not 0 < trust_neighbors < len(subset) / 2:
        raise PipelineError(f"trust_neighbors={trust_neighbors} must be between 1 and half the {len(subset)} scored "
                            "images; lower it or embed more images")
    out: dict[str, Any] = {"n": len(a), "threads": threads, "seed": seed, "perplexity": perplexity,
                           "max_iter": max_iter, "trust_neighbors": trust_neighbors, "trust_size": len(subset),
                           "methods": {}}
    embeddings = {}
    # "spawn": a fresh interpreter per method, sharing no thread pool or heap with this one or with the others.
    ctx = get_context("spawn")
    for m in dict.fromkeys(methods):
        reason = available(m)
        if reason:
            out["methods"][m] = {"unavailable": reason}
            continue
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            embeddings[m], seconds = pool.submit(_timed, a, m, seed, threads, perplexity, max_iter).result()
        out["methods"][m] = {"seconds": seconds}
    for m, emb in embeddings.items():
        if emb.shape != (len(a), 2) or not np.isfinite(emb).all():
            raise PipelineError(f"t-SNE method {m} gave a {emb.shape} embedding with non-finite values; "
                                "it cannot be scored")
        out["methods"][m]["trustworthiness"] = float(trustworthiness(a[subset], emb[subset],
                                                                     n_neighbors=trust_neighbors))
    ref = out["methods"].get(REFERENCE_METHOD, {}).get("seconds")
    for r in out["methods"].values():
        if ref and "seconds" in r:
            r["speedup"] = ref / r["seconds"]
    out["peak_memory_mib"] = peak_memory_mib()  # of this process: the trustworthiness scores
    return out


def pick(result: Mapping[str, Any], *, tolerance: float = TOLERANCE) -> str:
    """The fastest measured method whose trustworthiness is at least REFERENCE_METHOD's minus `tolerance`
    (REFERENCE_METHOD itself when no faster one qualifies)."""
    measured = {m: r for m, r in result["methods"].items() if "seconds" in r}
    if REFERENCE_METHOD not in measured:
        raise PipelineError(f"cannot pick a t-SNE method without the reference {REFERENCE_METHOD} measured; "
                            "include it")
    floor = measured[REFERENCE_METHOD]["trustworthiness"] - tolerance
    good = [m for m, r in measured.items() if r["trustworthiness"] >= floor]
    return min(good, key=lambda m: measured[m]["seconds"])


def _rows(result: Mapping[str, Any]) -> list[list[str]]:
    winner = pick(result) if "seconds" in result["methods"].get(REFERENCE_METHOD, {}) else None
    rows = []
    for m, r in result["methods"].items():
        if "seconds" not in r:
            rows.append([m, "-", "-", "-", f"unavailable: {r['unavailable']}"])
            continue
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else "-"
        rows.append([m, f"{r['seconds']:.1f}", speed, f"{r['trustworthiness']:.4f}", "winner" if m == winner else ""])
    return rows


HEADER = ["method", "seconds", f"speed vs {REFERENCE_METHOD}", "trustworthiness", ""]


def _caption(result: Mapping[str, Any]) -> str:
    return (f"t-SNE of {result['n']} images, {result['threads']} threads, perplexity {result['perplexity']:g}, "
            f"{result['max_iter']} iterations; trustworthiness against the raw pixels, {result['trust_neighbors']} "
            f"neighbours, on {result['trust_size']} images; winner: fastest within {TOLERANCE} of "
            f"{REFERENCE_METHOD}")


def format_table(result: Mapping[str, Any]) -> str:
    """Plain-text table: one line per method with its seconds, speed ratio to REFERENCE_METHOD and trustworthiness."""
    rows = [HEADER, *_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join([_caption(result), *lines])


def format_markdown(result: Mapping[str, Any]) -> str:
    """The same table in Markdown, its caption as a paragraph above it."""
    rows = [HEADER, ["---"] * len(HEADER), *_rows(result)]
    return "\n".join([_caption(result) + ".", "", *("| " + " | ".join(r) + " |" for r in rows)])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: load the test images of an MNIST folder, compare the methods, print the table, optionally save JSON."""
    from .. import data, io

    ap = argparse.ArgumentParser(prog="python -m mnistpipe.lab.bench_tsne", description=__doc__.split("\n")[0])
    ap.add_argument("--mnist", help="folder or URL holding the four MNIST .gz files (default: $MNIST_MIRROR)")
    ap.add_argument("--n", type=int, default=10000, help="test images to embed (the first n)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--perplexity", type=float, default=30.0)
    ap.add_argument("--max-iter", type=int, default=500)
    ap.add_argument("--methods", default=",".join(TSNE_METHODS), help="comma list of " + ", ".join(TSNE_METHODS))
    ap.add_argument("--trust-neighbors", type=int, default=TRUST_NEIGHBORS)
    ap.add_argument("--trust-size", type=int, help="score a seeded subset of this many images (default: all)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args(argv)
    if args.n < 2 or args.threads < 1:
        raise PipelineError(f"--n {args.n} / --threads {args.threads}: need at least 2 images and 1 thread")
    mnist = mnist_source(args.mnist)
    with tempfile.TemporaryDirectory() as tmp:
        raw = data.download([mnist], tmp)
    x, _ = data.load_pair(raw["test_images"], raw["test_labels"], name="test")
    if args.n > len(x):
        raise PipelineError(f"--n {args.n} exceeds the {len(x)} test images; use at most {len(x)}")
    result = run(x[: args.n].numpy(), methods=[m for m in args.methods.split(",") if m], seed=args.seed,
                 threads=args.threads, perplexity=args.perplexity, max_iter=args.max_iter,
                 trust_neighbors=args.trust_neighbors, trust_size=args.trust_size)
    if "seconds" in result["methods"].get(REFERENCE_METHOD, {}):
        result["winner"] = pick(result)
    print(format_table(result))
    if args.json:
        io.write_json(args.json, result)
    return result


if __name__ == "__main__":
    run_cli(main)
