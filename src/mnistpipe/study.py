"""The study as a document: the original report's sections, in its order, filled from one run's metrics and figures.

Pure functions, no paths of the repository and no params.yaml: `stages/report.py` reads the metrics files, the
figures and the few params the text names, and passes them in as dicts. `study_context` checks and arranges them;
`render_markdown` fills the Jinja2 template `templates/study.md.j2` (the numbers are formatted, and every sentence
that states a conclusion is chosen, in the template from those numbers); `render_html` turns the same Markdown,
with the figures as base64 data URIs, into one self-contained page (markdown-it-py, then `templates/study.html.j2`).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
from markdown_it import MarkdownIt

from .errors import PipelineError
from .params import BASELINE_KEYS

# Numbers stated in the original report ("CNNs and AutoEncoders" on MNIST), quoted beside ours, never recomputed.
REPORT = {
    "baseline": {"test": "98% (report table)", "val": "98.16% (epoch 5)", "time": "≈261 s (5 epochs)"},
    "tuned": {"test": "98.60%", "val": "99.10% (best epoch)", "time": "n/a"},
    "noisy": {"test": "98% (report table)", "val": "97.57%", "time": "≈475 s (5 epochs)"},
    "denoised": {"test": "99% (report table)", "val": "n/a", "time": "n/a"},
}
# The section headings, in the original report's order (the template writes them; the tests look for them).
SECTIONS = (
    "Data exploration",
    "The CNN and its feature maps",
    "Baseline CNN",
    "Hyperparameter tuning",
    "Dropout on and off",
    "Noise",
    "CNN trained on noisy images",
    "The denoising autoencoder",
    "t-SNE",
    "CNN trained on denoised images",
    "Accuracy and training time",
    "Noise robustness",
    "The original report's numbers beside ours",
)
# Every figure the document shows, by name: plots/<name>.png.
FIGURES = ("label_distribution", "samples", "feature_maps_conv1", "feature_maps_conv2", "misclassified",
           "tune_cnn/optimization_history", "tune_cnn/param_importances", "tune_cnn/parallel_coordinate",
           "noisy_example", "denoising", "tsne", "comparison", "confusion_matrices", "robustness")
# The evaluate results the document reads, and the training stage whose metrics belong to each model.
MODELS = {"baseline": "train_baseline", "tuned": "tune_cnn", "noisy": "train_on_noisy", "denoised": "train_on_denoised"}
RESULTS = (*MODELS, "tuned_on_noisy", "tuned_on_denoised")
ROBUSTNESS = {"clean_cnn": "clean-trained CNN", "noisy_cnn": "noisy-trained CNN",
              "dae_clean_cnn": "autoencoder + clean-trained CNN",
              "dae_denoised_cnn": "autoencoder + denoised-trained CNN"}
CURVES = ("val_acc", "train_loss", "val_loss")  # per-epoch columns written by dvclive
SIX = BASELINE_KEYS  # the report's six CNN hyperparameters
# The params (dotted keys; a prefix covers a section) that shape a trained baseline apart from its dropout and
# seed: a committed seed grid describes a run only where all of them are equal.
GRID_KEYS = ("dataset", *(k for k in SIX if k != "dropout"), "recipe.", "download.val_size", "download.train_limit")
TEMPLATE_PACKAGE = "mnistpipe"


def _number(obj: Mapping, dotted: str, source: str) -> float:
    node: Any = obj
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        raise PipelineError(f"{source} has no finite number at '{dotted}'")
    return node


def report_number(text: str | None) -> float | None:
    """The leading percentage of one of the original report's quoted numbers ('98.60%', '98% (report table)') as a
    fraction, or None ('n/a')."""
    found = re.match(r"\s*([\d.]+)\s*%", text or "")
    return float(found.group(1)) / 100 if found else None


def _class_rows(report: Mapping, class_names: Sequence[str], source: str) -> list[dict]:
    rows = []
    for name in class_names:
        row = report.get(name)
        if not isinstance(row, Mapping):
            raise PipelineError(f"{source} has no row for class {name!r} (of {', '.join(class_names)}); the "
                                "classification reports are of another dataset: rerun evaluate")
        rows.append({"name": name, **{k: _number(row, k, source) for k in ("precision", "recall", "f1-score",
                                                                           "support")}})
    return rows


def _trial_rows(trials: Sequence[Mapping[str, str]]) -> list[dict]:
    """The search's trials (rows of metrics/tune_cnn_trials.csv) with numbers parsed; unfinished ones dropped."""
    out = []
    for t in trials:
        try:
            value = float(t["value"]) if t.get("value") not in (None, "") else None
            row = {"number": int(t["number"]), "value": value, "state": t.get("state", "")}
            for key in SIX:
                raw = t.get(f"params_{key}", "")
                row[key] = float(raw) if key in ("dropout", "lr") else int(float(raw))
        except (KeyError, ValueError) as exc:
            raise PipelineError(f"the trials table has an unreadable row ({exc}); rerun tune_cnn") from None
        out.append(row)
    return out


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys ({"recipe": {"hidden": 128}} -> {"recipe.hidden": 128}), as DVC shows them."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def seed_grid_context(grid: Mapping[str, Any], *, run_params: Mapping[str, Any], source: str) -> dict[str, Any]:
    """A committed dropout seed grid (the JSON `python -m mnistpipe.lab.seedgrid --summary` writes), checked, with
    `differs`: the params shaping a baseline (GRID_KEYS) on which it and this run (`run_params`, nested) disagree,
    as [key, the grid's value, this run's value]; empty when the grid describes this run."""
    settings = grid.get("settings") if isinstance(grid, Mapping) else None
    tests = grid.get("welch") if isinstance(grid, Mapping) else None
    if not isinstance(settings, list) or len(settings) < 2 or not isinstance(tests, list) \
            or len(tests) != len(settings) - 1:
        raise PipelineError(f"{source} is not a seed grid of two or more settings; rerun "
                            "`SUMMARY={source} scripts/seed_grid.sh`")
    for i, row in enumerate(settings):
        for key in ("mean", "n"):
            _number(row, key, f"{source} setting {i}")
        if not isinstance(row.get("params"), Mapping) or "dropout" not in row["params"]:
            raise PipelineError(f"{source} setting {i} names no dropout; rerun `SUMMARY={source} scripts/seed_grid.sh`")
    for i, w in enumerate(tests):
        if w is not None:
            for key in ("delta", "se", "t", "df", "p"):
                _number(w, key, f"{source} test {i}")
    shared, mine = grid.get("shared_params") or {}, flatten(run_params)
    keys = sorted(k for k in set(shared) | set(mine)
                  if any(k.startswith(g) if g.endswith(".") else k == g for g in GRID_KEYS))
    differs = [[k, shared.get(k), mine.get(k)] for k in keys if shared.get(k) != mine.get(k)]
    return {"commit": str(grid.get("commit") or "")[:12], "metric": grid.get("metric", ""),
            "settings": settings, "tests": tests, "alpha": float(grid.get("alpha", 0.05)), "differs": differs}


def study_context(metrics: Mapping[str, Any], *, dataset: str, class_names: Sequence[str],
                  baseline_hyperparameters: Mapping[str, Any], trials: Sequence[Mapping[str, str]],
                  curves: Mapping[str, Mapping[str, Sequence[float]]], reports: Mapping[str, Mapping],
                  figures: Mapping[str, Any], seed_grid: Mapping[str, Any] | None = None,
                  original: Mapping = REPORT) -> dict:
    """Everything the template shows, checked.

    metrics: the parsed metrics files by stage ('download', 'add_awgn', 'denoise', 'evaluate', 'robustness', and
    'train_baseline', 'tune_cnn', 'train_on_noisy', 'train_dae', 'train_on_denoised' for their metrics.json,
    'select_cnn' for its choice).
    reports: evaluate's classification reports (dicts by class name) for `MODELS`. curves: stage -> column ->
    per-epoch values. trials: rows of the trials table as text. figures: name -> anything true when the figure
    exists (bytes for the page). seed_grid: a committed seed grid as `seed_grid_context` returns it, or None.
    """
    names = list(class_names)
    if len(names) != 10:
        raise PipelineError(f"expected ten class names for {dataset!r}, got {len(names)}")
    for stage in ("download", "add_awgn", "denoise", "evaluate", "robustness", "train_dae", "select_cnn",
                  *MODELS.values()):
        if not isinstance(metrics.get(stage), Mapping):
            raise PipelineError(f"the metrics of {stage} are missing; rerun `dvc repro {stage}`")
    for key in ("baseline_trial_val_acc", "best_trial_val_acc"):
        _number(metrics["select_cnn"], key, "metrics/select_cnn.json")
    ev = metrics["evaluate"]
    for name in RESULTS:
        _number(ev, f"{name}.accuracy", "metrics/evaluate.json")
        _number(ev, f"{name}.n_errors", "metrics/evaluate.json")
    for stage in (*MODELS.values(), "train_dae"):
        _number(metrics[stage], "train_seconds", f"metrics of {stage}")
    counts = metrics["download"].get("train_label_counts")
    if not isinstance(counts, list) or len(counts) != len(names):
        raise PipelineError("metrics/download.json has no ten train_label_counts; rerun download")
    rob = []
    for key, row in metrics["robustness"].items():
        std = float(key.removeprefix("std_"))
        accs = {m: _number(row, f"{m}_acc", "metrics/robustness.json") for m in ROBUSTNESS}
        best = max(accs.values())
        rob.append({"std": std, "acc": accs, "best": [m for m, a in accs.items() if a == best],
                    "noisy_psnr": row.get("noisy_psnr_db"), "denoised_psnr": row.get("denoised_psnr_db")})
    rob.sort(key=lambda r: r["std"])
    rows = _trial_rows(trials)
    finished = sorted((t for t in rows if t["state"] == "COMPLETE" and t["value"] is not None),
                      key=lambda t: (-t["value"], t["number"]))
    best_number = metrics["tune_cnn"].get("best_trial")
    best = next((t for t in rows if t["number"] == best_number), None)
    return {
        "dataset": dataset,
        "class_names": names,
        "m": metrics,
        "ev": ev,
        "reports": {k: _class_rows(v, names, f"metrics/evaluate/reports/{k}.json") for k, v in reports.items()},
        "curves": curves,
        "label_counts": [{"name": n, "count": c} for n, c in zip(names, counts, strict=True)],
        "baseline_hp": {k: baseline_hyperparameters[k] for k in SIX},
        "trials": rows,
        "top_trials": finished[:5],
        "best_trial": best,
        "states": {s: sum(t["state"] == s for t in rows) for s in sorted({t["state"] for t in rows})},
        "robustness": rob,
        "methods": ROBUSTNESS,
        "wins": {m: [r["std"] for r in rob if m in r["best"]] for m in ROBUSTNESS},
        "figures": {name: bool(figures.get(name)) for name in FIGURES},
        "seed_grid": seed_grid,
        "original": {k: {**v, "test_value": report_number(v.get("test")), "val_value": report_number(v.get("val"))}
                     for k, v in original.items()},
        "six": SIX,
    }


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _g(x: Any) -> str:
    """A param or trial value as written: three significant digits for floats (0.162, 0.00615), ints as they are."""
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _points(a: float, b: float) -> str:
    return f"{100 * (a - b):+.2f} points"


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the study templates (package data: mnistpipe/templates)."""
    env = jinja2.Environment(loader=jinja2.PackageLoader(TEMPLATE_PACKAGE, "templates"),
                             undefined=jinja2.StrictUndefined, autoescape=False,  # noqa: S701 (Markdown, not HTML)
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(pct=_pct, num=_num, points=_points, g=_g)
    return env


def render_markdown(context: Mapping[str, Any], figure_src: Callable[[str], str]) -> str:
    """The study as Markdown; `figure_src(name)` gives the image address of plots/<name>.png."""
    text = environment().get_template("study.md.j2").render(**context, fig=figure_src)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_html(context: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: the Markdown of `render_markdown` with every figure inlined as a data URI."""
    markdown = render_markdown(context, lambda name: data_uri(figures[name]))
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    title = f"CNNs and autoencoders on {context['dataset']}: the study, reproduced"
    return environment().get_template("study.html.j2").render(title=title, body=body)


def relative_figure(prefix: str) -> Callable[[str], str]:
    """figure_src for a Markdown file beside plots/'s parent: `prefix` + name + '.png' (e.g. '../plots/')."""
    return lambda name: f"{prefix}{name}.png"
