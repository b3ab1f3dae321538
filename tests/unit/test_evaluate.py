"""Evaluation on hand-made predictions whose confusion matrix and classification report are known exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mnistpipe import evaluate
from mnistpipe.errors import PipelineError

# Ten images, one per digit; two errors: a 3 read as 5 (90% sure) and a 7 read as 1 (60% sure).
Y = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
ERRORS = {3: (5, 0.9), 7: (1, 0.6)}


def _probs(y=Y, errors=ERRORS, right=0.8) -> np.ndarray:
    """Probability rows: `right` on the true digit, or `conf` on the wrong one; the rest spread evenly."""
    rows = []
    for i, t in enumerate(y):
        pred, conf = errors.get(i, (t, right))
        row = np.full(10, (1 - conf) / 9)
        row[pred] = conf
        rows.append(row)
    return np.array(rows)


@pytest.fixture(scope="module")
def result() -> dict:
    return evaluate.evaluate_predictions(torch.tensor(Y), torch.tensor(_probs()), n_misclassified=10)


def test_accuracy_and_error_count(result):
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["n_errors"] == 2


def test_per_class_accuracy(result):
    assert set(result["per_class"]) == {str(d) for d in range(10)}
    assert result["per_class"]["3"] == 0.0
    assert result["per_class"]["7"] == 0.0
    assert all(result["per_class"][str(d)] == 1.0 for d in (0, 1, 2, 4, 5, 6, 8, 9))


def test_confusion_matrix(result):
    cm = np.array(result["confusion"])
    assert cm.shape == (10, 10)
    assert cm.sum() == 10
    assert cm[3, 5] == 1 and cm[7, 1] == 1  # rows: true digit, columns: predicted digit
    assert cm[5, 3] == 0 and cm[1, 7] == 0
    assert list(np.diag(cm)) == [1, 1, 1, 0, 1, 1, 1, 0, 1, 1]


def test_classification_report(result):
    r = result["report"]
    # 5 is predicted twice (once right), never missed: precision 1/2, recall 1, F1 2/3; likewise 1.
    for d in ("5", "1"):
        assert r[d]["precision"] == pytest.approx(0.5)
        assert r[d]["recall"] == pytest.approx(1.0)
        assert r[d]["f1-score"] == pytest.approx(2 / 3)
        assert r[d]["support"] == 1
    # 3 and 7 are never predicted: recall 0, and precision 0 by zero_division=0.
    for d in ("3", "7"):
        assert r[d]["precision"] == 0.0 and r[d]["recall"] == 0.0 and r[d]["f1-score"] == 0.0
    assert r["0"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 1})
    assert r["accuracy"] == pytest.approx(0.8)
    macro = (6 * 1.0 + 2 * (2 / 3) + 2 * 0.0) / 10
    assert result["macro_f1"] == pytest.approx(macro)
    assert r["macro avg"]["f1-score"] == pytest.approx(macro)
    text = result["report_text"]
    assert "precision" in text and "macro avg" in text
    assert "0.6667" in text  # the F1 of 1 and 5, printed with four digits


def test_misclassified_most_confident_first(result):
    assert result["misclassified"] == [
        {"index": 3, "true": 3, "pred": 5, "confidence": pytest.approx(0.9)},
        {"index": 7, "true": 7, "pred": 1, "confidence": pytest.approx(0.6)},
    ]
    top = evaluate.evaluate_predictions(Y, _probs(), n_misclassified=1)["misclassified"]
    assert [m["index"] for m in top] == [3]
    assert evaluate.evaluate_predictions(Y, _probs(), n_misclassified=0)["misclassified"] == []


def test_equal_confidence_keeps_index_order():
    errors = {2: (4, 0.7), 5: (0, 0.7), 8: (1, 0.95)}
    got = evaluate.evaluate_predictions(Y, _probs(errors=errors), n_misclassified=5)["misclassified"]
    assert [m["index"] for m in got] == [8, 2, 5]


def test_logits_are_turned_into_softmax_confidence():
    logits = torch.zeros(3, 10)
    logits[0, 2] = math.log(9.0)  # 9 / (9 + 9 * 1) = 0.5
    logits[1, 1] = 5.0
    logits[2, 7] = 5.0
    res = evaluate.evaluate_predictions([0, 1, 7], logits, n_misclassified=5)
    assert res["accuracy"] == pytest.approx(2 / 3)
    assert res["misclassified"] == [{"index": 0, "true": 0, "pred": 2, "confidence": pytest.approx(0.5)}]
    # Same predictions from logits and from their softmax.
    again = evaluate.evaluate_predictions([0, 1, 7], torch.softmax(logits, 1), n_misclassified=5)
    assert again["confusion"] == res["confusion"]
    assert again["misclassified"] == [{**m, "confidence": pytest.approx(m["confidence"])}
                                      for m in res["misclassified"]]


def test_results_are_plain_json_values(result):
    import json

    small = evaluate.summary(result)
    assert list(small) == ["accuracy", "per_class", "macro_f1", "n_errors"]
    assert json.loads(json.dumps(small)) == small
    json.dumps(result)  # every part, report included, must be serialisable as it is


def test_digit_missing_from_labels_has_no_per_class_accuracy():
    res = evaluate.evaluate_predictions([0, 0, 1], _probs(y=[0, 0, 1], errors={}), n_misclassified=3)
    assert res["per_class"]["0"] == 1.0 and res["per_class"]["1"] == 1.0
    assert res["per_class"]["5"] is None
    assert np.array(res["confusion"]).shape == (10, 10)


@pytest.mark.parametrize("labels, outputs, match", [
    ([0, 1, 2], np.full((2, 10), 0.1), "3 labels but 2 predictions"),
    ([], np.zeros((0, 10)), "empty"),
    ([0, 1], np.zeros((2, 3)), r"shape \(N, 10\)"),
])
def test_bad_inputs_are_user_errors(labels, outputs, match):
    with pytest.raises(PipelineError, match=match):
        evaluate.evaluate_predictions(labels, outputs, n_misclassified=1)


def test_predicted_labels_are_the_ones_the_matrix_counts(result):
    assert result["predicted"] == [ERRORS.get(i, (t,))[0] for i, t in enumerate(Y)]
    assert all(type(v) is int for v in result["predicted"])
    cm = np.zeros((10, 10), dtype=int)
    np.add.at(cm, (Y, result["predicted"]), 1)
    assert cm.tolist() == result["confusion"]


def test_checked_confusions_returns_the_saved_matrices(result):
    saved = {"tuned": result["confusion"], "noisy": np.eye(10, dtype=int).tolist(), "other": None}
    assert evaluate.checked_confusions(saved, ["tuned", "noisy"], source="c.json") == {
        "tuned": result["confusion"], "noisy": saved["noisy"]}


@pytest.mark.parametrize("bad", [
    None, [], {"noisy": [[1] * 10] * 10},                      # not a mapping / the result missing
    {"tuned": [[1] * 10] * 9}, {"tuned": [[1] * 9] * 10},      # 9x10, 10x9
    {"tuned": [[1] * 10] * 9 + [[1] * 9 + [-1]]},              # a negative count
    {"tuned": [[1] * 10] * 9 + [[1] * 9 + [0.5]]},             # not a count
    {"tuned": [[1] * 10] * 9 + [[1] * 9 + [True]]},
    {"tuned": [[1] * 10] * 9 + ["1" * 10]},
])
def test_checked_confusions_refuses_a_damaged_file(bad):
    with pytest.raises(PipelineError) as exc:
        evaluate.checked_confusions(bad, ["tuned"], source="metrics/evaluate/confusion.json")
    assert str(exc.value) == ("metrics/evaluate/confusion.json holds no 10x10 matrix of counts for 'tuned'; "
                              "rerun `dvc repro evaluate`")
