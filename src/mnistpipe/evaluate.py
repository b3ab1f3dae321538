"""Test-set scores of a classifier: accuracy, per-class accuracy, sklearn's report, confusion matrix, worst errors.

Every function takes labels and model outputs (or predictions) and returns plain Python values, so the results
go straight into JSON files and DVC plots.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from .errors import PipelineError

N_CLASSES = 10
CLASSES = list(range(N_CLASSES))
SUMMARY_KEYS = ("accuracy", "per_class", "macro_f1", "n_errors")


def _numpy(a: Any) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def probabilities(logits_or_probs: Any) -> np.ndarray:
    """Class probabilities (N, 10) from logits or from rows that already are probabilities (left as they are)."""
    s = _numpy(logits_or_probs).astype(np.float64)
    if s.ndim != 2 or s.shape[1] != N_CLASSES:
        raise PipelineError(f"expected model outputs of shape (N, {N_CLASSES}), got {s.shape}; "
                            "the checkpoint is not a 10-class MNIST classifier")
    if s.size and s.min() >= 0 and np.allclose(s.sum(1), 1.0, atol=1e-4):
        return s
    s = np.exp(s - s.max(1, keepdims=True))  # softmax, shifted so large logits cannot overflow
    return s / s.sum(1, keepdims=True)


def evaluate_predictions(y_true: Any, logits_or_probs: Any, *, n_misclassified: int,
                         class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Score 10-class predictions against the true labels.

    Returns accuracy, per-class accuracy (recall; None for a digit absent from `y_true`), macro F1, the error
    count, sklearn's classification report as a dict (`report`) and as text (`report_text`), the 10x10
    confusion matrix (rows: true digit, columns: predicted digit), the predicted labels (`predicted`, one per
    image, from which the matrix was counted) and the `n_misclassified` most confident errors as
    {index, true, pred, confidence}, most confident first (ties: lower index first).
    `class_names` (ten, index = label; default the digits) name the classes in the report; metric keys stay the
    label numbers.
    """
    y = _numpy(y_true).astype(np.int64).ravel()
    probs = probabilities(logits_or_probs)
    if len(y) != len(probs):
        raise PipelineError(f"{len(y)} labels but {len(probs)} predictions; the images and labels come from "
                            "different runs, rerun the pipeline with `dvc repro`")
    if len(y) == 0:
        raise PipelineError("the test set is empty; rerun `dvc repro download`")
    pred = probs.argmax(1)
    conf = probs.max(1)
    cm = confusion_matrix(y, pred, labels=CLASSES)
    support = cm.sum(1)
    names = [str(c) for c in CLASSES] if class_names is None else [str(c) for c in class_names]
    if len(names) != N_CLASSES or len(set(names)) != N_CLASSES:
        raise PipelineError(f"expected {N_CLASSES} distinct class names, got {names}")
    # labels= keeps all ten digits in the report even when a small test set lacks one.
    kwargs = dict(labels=CLASSES, target_names=names, digits=4, zero_division=0)
    report = classification_report(y, pred, output_dict=True, **kwargs)
    wrong = np.flatnonzero(pred != y)
    worst = wrong[np.argsort(-conf[wrong], kind="stable")][: max(n_misclassified, 0)]
    return {
        "accuracy": float((pred == y).mean()),
        "per_class": {str(c): (float(cm[c, c] / support[c]) if support[c] else None) for c in CLASSES},
        "macro_f1": float(report["macro avg"]["f1-score"]),
        "n_errors": int(len(wrong)),
        "report": report,
        "report_text": classification_report(y, pred, **kwargs),
        "confusion": cm.tolist(),
        "predicted": pred.tolist(),
        "misclassified": [{"index": int(i), "true": int(y[i]), "pred": int(pred[i]), "confidence": float(conf[i])}
                          for i in worst],
    }


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The small numeric part of an `evaluate_predictions` result, for a DVC metrics file."""
    return {k: result[k] for k in SUMMARY_KEYS}


def checked_confusions(saved: Any, names: Iterable[str], *, source: str) -> dict[str, list[list[int]]]:
    """The confusion matrices `names` of a saved {name: matrix} mapping (`evaluate_predictions`' `confusion`),
    checked: a result that is missing, not 10x10 or holds anything but counts is one line naming `source`."""
    out = {}
    for name in names:
        cm = saved.get(name) if isinstance(saved, dict) else None
        ok = (isinstance(cm, list) and len(cm) == N_CLASSES
              and all(isinstance(row, list) and len(row) == N_CLASSES for row in cm)
              and all(type(v) is int and v >= 0 for row in cm for v in row))
        if not ok:
            raise PipelineError(f"{source} holds no {N_CLASSES}x{N_CLASSES} matrix of counts for '{name}'; "
                                "rerun `dvc repro evaluate`")
        out[name] = cm
    return out
