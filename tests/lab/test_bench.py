"""The benchmark: seed means, time-to-target from fixed schedules, bounds and goals, the selection rule, CPU
facts, a quick run on real MNIST, and RESULTS.md generated from JSON."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mnistpipe import train
from mnistpipe.errors import PipelineError
from mnistpipe.lab import bench, bench_parts

REPO_ROOT = Path(__file__).resolve().parents[2]
PARAMS = ["--params", str(REPO_ROOT / "params.yaml")]


def test_bench_imports_no_pipeline_tools():
    code = ("import sys, mnistpipe.lab.bench, mnistpipe.lab.bench_parts, mnistpipe.plots; "
            "bad = [m for m in ('dvc', 'dvclive', 'optuna') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def runs(accs: list[float], seconds: list[float]) -> list[dict]:
    return [{"test_acc": a, "train_seconds": s} for a, s in zip(accs, seconds, strict=True)]


def test_summarise_means_and_sample_std():
    rows = bench.summarise({2: runs([0.99, 0.98], [20.0, 22.0]), 1: runs([0.97], [10.0])})
    assert [r["epochs"] for r in rows] == [1, 2], "sorted by schedule"
    assert rows[0]["acc_std"] == 0.0 and rows[0]["time_mean"] == 10.0
    assert rows[1]["acc_mean"] == pytest.approx(0.985) and rows[1]["time_mean"] == pytest.approx(21.0)
    assert rows[1]["time_std"] == pytest.approx(2 ** 0.5)  # sample std of 20 and 22
    assert rows[1]["test_acc"] == [0.99, 0.98]


# One seed crosses 99.0 % after one epoch but the mean (98.95 %) does not; the mean crosses after two.
REF = bench.summarise({1: runs([0.991, 0.988], [50.0, 52.0]), 2: runs([0.990, 0.992], [100.0, 102.0])})
LOOP = bench.summarise({1: runs([0.990, 0.990], [24.0, 24.0])})
OURS = bench.summarise({1: runs([0.990, 0.990], [4.0, 4.0]), 2: runs([0.993, 0.993], [8.0, 8.0])})


def test_time_to_is_the_shortest_schedule_whose_mean_reaches_the_target():
    assert bench.time_to(REF, 0.990) == pytest.approx(101.0), "one seed crossing at epoch 1 is not enough"
    assert bench.time_to(OURS, 0.990) == 4.0 and bench.time_to(OURS, 0.992) == 8.0
    assert bench.time_to(REF, 0.992) is None and bench.time_to(LOOP, 0.992) is None


def test_ratios_and_bounds_when_a_column_never_reaches_the_target():
    assert bench.ratio(REF, OURS, 0.990) == {"value": pytest.approx(101.0 / 4.0), "bound": ""}
    # the reference never reaches 99.2 %: its longest schedule (101 s) gives a lower bound
    assert bench.ratio(REF, OURS, 0.992) == {"value": pytest.approx(101.0 / 8.0), "bound": ">"}
    # the faster column never reaches it: an upper bound
    assert bench.ratio(OURS, LOOP, 0.992) == {"value": pytest.approx(8.0 / 24.0), "bound": "<"}
    assert bench.ratio(REF, LOOP, 0.992) is None
    assert bench.fmt_ratio(bench.ratio(REF, OURS, 0.992)) == ">12.6x" and bench.fmt_ratio(None) == "-"


def test_goals_met_and_not_met_with_their_numbers():
    goals = {g["id"]: g for g in bench.evaluate_goals({"reference": REF, "refloop": LOOP, "project": OURS})}
    # (i) 8 s to 99.2 % against 0.1 x 51 s = 5.1 s: not met. (ii) 101 / 4 = 25.2x < 40x: not met.
    assert goals["i"]["met"] is False and "8.0 s vs 0.1 x 51.0 s = 5.1 s" in goals["i"]["text"]
    assert goals["ii"]["met"] is False and "25.2x" in goals["ii"]["text"]
    assert goals["iii"]["met"] is None and "2.1x per first epoch" in goals["iii"]["text"]
    fast = bench.summarise({1: runs([0.993, 0.993], [2.0, 2.0])})
    goals = {g["id"]: g for g in bench.evaluate_goals({"reference": REF, "project": fast})}
    assert goals["i"]["met"] is True and goals["ii"]["met"] is True and "50.5x" in goals["ii"]["text"]
    assert "iii" not in goals, "no engineering ratio without column (b)"
    # a lower bound proves the goal once it clears 40x; an upper bound never does
    slow = bench.summarise({1: runs([0.98], [400.0])})
    assert {g["id"]: g for g in bench.evaluate_goals({"reference": slow, "project": fast})}["ii"]["met"] is True
    assert {g["id"]: g for g in bench.evaluate_goals({"reference": REF, "project": slow})}["ii"]["met"] is False
    assert all(g["met"] is None for g in bench.evaluate_goals({"project": OURS}))


def test_cpu_info_is_robust_without_proc_cpuinfo(tmp_path, monkeypatch):
    info = bench.cpu_info(tmp_path / "absent")  # macOS, Windows
    assert info["avx2"] is None and info["avx512f"] is None and info["model"]
    assert info["cores"] >= 1 and info["torch_threads"] >= 1 and info["torch"] == torch.__version__
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd\n")  # no flags line: unknown, not "no"
    assert bench.cpu_info(arm)["avx2"] is None
    x86 = tmp_path / "x86"
    x86.write_text("model name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx avx2 fma\n\nmodel name\t: other\n")
    info = bench.cpu_info(x86)
    assert (info["model"], info["avx2"], info["avx512f"]) == ("Test CPU 9000", True, False)
    monkeypatch.delattr(torch.backends.cpu, "get_cpu_capability")  # an older torch
    assert bench.cpu_info(x86)["capability"] is None


def tiny_digits(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.uint8)
    for i, c in enumerate(y.tolist()):
        x[i, 4 + 2 * c: 6 + 2 * c, 6:22] = 255
    return x, y


def test_epoch_k_of_a_longer_step_lr_run_is_the_k_epoch_schedule():
    """Why one 6-epoch run per seed gives the reference's 1..6-epoch schedules: nothing in epoch k depends on the
    run's length, and scoring the test set after an epoch changes nothing."""
    x, y = tiny_digits(128, 0)
    xt, yt = tiny_digits(64, 1)
    states = []

    def loop(epochs: int) -> torch.nn.Module:
        torch.manual_seed(3)
        model = bench_parts.ReferenceNet()
        train.train_module(model, bench_parts._normalised(x), y, bench_parts._normalised(xt), yt,
                           loss_fn=F.nll_loss, optimizer=bench_parts.adadelta_steplr(), epochs=epochs,
                           batch_size=64, seed=3, device="cpu",
                           on_epoch=lambda e, rec: states.append(copy.deepcopy(model.state_dict())))
        return model

    one = loop(1).state_dict()
    states.clear()
    loop(2)
    assert all(torch.equal(one[k], states[0][k]) for k in one)
    assert not all(torch.equal(one[k], states[1][k]) for k in one)
    short = bench_parts.run_reference(x, y, xt, yt, epochs=1, seed=3, device="cpu")
    long = bench_parts.run_reference(x, y, xt, yt, epochs=2, seed=3, device="cpu")
    assert short[0]["test_acc"] == long[0]["test_acc"] and [r["epoch"] for r in long] == [1, 2]


CANDIDATES = [
    {"batch_size": 256, "lr": 0.01, "epochs": 1, "images": 100, "val_acc_mean": 0.9899},  # a seed crossed, mean not
    {"batch_size": 256, "lr": 0.01, "epochs": 2, "images": 200, "val_acc_mean": 0.9921},
    {"batch_size": 512, "lr": 0.02, "epochs": 2, "images": 200, "val_acc_mean": 0.9930},
    {"batch_size": 512, "lr": 0.02, "epochs": 3, "images": 300, "val_acc_mean": 0.9950},
]


def test_selection_picks_the_cheapest_candidate_whose_val_mean_reaches_the_target():
    assert bench_parts.pick(CANDIDATES, 0.990)["val_acc_mean"] == 0.9930, "2 epochs; the tie goes to the higher mean"
    assert bench_parts.pick(CANDIDATES, 0.994)["epochs"] == 3
    assert bench_parts.pick(CANDIDATES, 0.999) is None


def test_select_trains_on_the_val_split_in_order_of_cost_and_stops(monkeypatch):
    x, y = tiny_digits(600, 0)
    calls = []

    def fake_train(model, xt, yt, xv, yv, *, lr, epochs, batch_size, seed, **hp):
        calls.append((len(yt), len(yv), epochs, seed))
        return train.FitResult(metrics={"val_acc": 0.995 if (epochs, lr) == (2, 0.016) else 0.99})

    monkeypatch.setattr(bench_parts.train, "train_cnn", fake_train)
    out = bench_parts.select(x, y, seeds=(7, 8), epochs=(2, 1, 3), val_size=100, split_seed=0, log=lambda _: None)
    assert {(n, v) for n, v, _, _ in calls} == {(500, 100)}, "trains on the rest, scores on the val split"
    assert [e for _, _, e, _ in calls] == [1] * 12 + [2] * 12, "cheapest first; stops once every target has a pick"
    assert out["picks"]["0.990"]["epochs"] == 1 and out["picks"]["0.992"] == out["recipe"]
    assert (out["recipe"]["lr"], out["recipe"]["epochs"]) == (0.016, 2) and out["recipe"]["val_acc"] == [0.995] * 2
    assert out["matches_default"] is False and (out["train_size"], out["val_size"]) == (500, 100)


def test_quick_select_on_real_mnist(helpers):
    out = bench.main(["--select", "--quick", "--mnist", str(helpers.require_mirror()), "--device", "cpu", *PARAMS])
    assert (out["kind"], out["quick"], out["train_size"], out["val_size"]) == ("select", True, 2000, 1000)
    assert out["seeds"] == [100, 101] and [len(c["val_acc"]) for c in out["candidates"]] == [2, 2]
    assert all(0.0 <= a <= 1.0 for c in out["candidates"] for a in c["val_acc"])
    text = bench.format_select(out)
    assert text.splitlines()[0] == bench.QUICK_NOTE and "pick for 99.2 %" in text and "rule: " in text


def test_unknown_part_and_failing_part_are_one_line_errors(tmp_path):
    with pytest.raises(PipelineError, match="unknown benchmark part"):
        bench.main(["--parts", "reference,bogus"])
    with pytest.raises(PipelineError, match="benchmark part failed .*could not get.*rerun it alone"):
        bench._run_part("mnistpipe.lab.bench_parts", ["reference", "--mnist", str(tmp_path / "empty")],
                        tmp_path / "out.json")


def test_quick_benchmark_on_real_mnist(tmp_path, helpers):
    """`--quick` end to end, each part in its own process (the t-SNE part is bench_tsne's, tested there)."""
    mirror = helpers.require_mirror()
    out = bench.main(["--quick", "--mnist", str(mirror), "--device", "cpu", "--skip", "tsne", "--seeds", "1",
                      *PARAMS, "--json", str(tmp_path / "quick.json")])
    assert json.loads((tmp_path / "quick.json").read_text()) == json.loads(json.dumps(out))
    assert (out["train_size"], out["test_size"], out["seeds"]) == (2000, 1000, [0])
    cols = out["columns"]
    assert {c: [r["epochs"] for r in v["schedules"]] for c, v in cols.items()} == {
        "reference": [1, 2], "refloop": [1, 2], "project": [1]}
    for col in cols.values():
        for r in col["schedules"]:
            assert len(r["test_acc"]) == 1 and all(0.0 <= a <= 1.0 for a in r["test_acc"])
            assert all(s > 0 for s in r["train_seconds"])
    # both reference-network columns learn the tiny set (chance is 10 %), and epoch 2 took longer than epoch 1
    assert all(cols[c]["schedules"][1]["acc_mean"] > 0.6 for c in ("reference", "refloop"))
    assert cols["refloop"]["schedules"][1]["time_mean"] > cols["refloop"]["schedules"][0]["time_mean"]
    assert out["dae"]["images_per_s"] > 0 and out["machine"]["cores"] >= 1 and out["date"]
    text = bench.format_table(out)
    assert text.splitlines()[0] == bench.QUICK_NOTE
    assert "(b) ReferenceNet, our loop" in text and "(a)/(b) engineering" in text and "(iii)" in text


# ------------------------------------------------------------------------------------------ RESULTS.md


def load_results_md():
    spec = importlib.util.spec_from_file_location("results_md", REPO_ROOT / "scripts" / "results_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_bench() -> dict:
    columns = {"reference": REF, "refloop": LOOP, "project": OURS}
    machine = {"model": "Test CPU", "cores": 2, "torch_threads": 2, "capability": "AVX2", "avx2": True,
               "avx512f": None, "torch": "2.x"}
    return {"kind": "bench", "quick": False, "date": "2026-12-01", "commit": "abc1234", "machine": machine,
            "device": "cpu", "seeds": [0, 1], "train_size": 60000, "test_size": 10000,
            "recipe": {"cnn": {"channels": [16, 32]}, "hp": {"lr": 0.008, "batch_size": 256, "epochs": 2}},
            "columns": {c: {"label": bench.COLUMNS[c], "schedules": rows} for c, rows in columns.items()},
            "time_to": {c: {f"{t:.3f}": bench.time_to(rows, t) for t in bench.TARGETS} for c, rows in columns.items()},
            "ratios": {f"{t:.3f}": {n: bench.ratio(columns[a], columns[b], t) for n, (a, b) in bench.RATIOS.items()}
                       for t in bench.TARGETS},
            "goals": bench.evaluate_goals(columns), "dae": {"images_per_s": 2500.0, "batch_size": 64}}


LOG = """COMMIT=def5678
DATE=2026-12-02
Running stage 'train_baseline':
> python stages/train_baseline.py
train_baseline: done in 22.1 s, peak memory 1257 MiB
evaluate: done in 7.8 s
WALL_SECONDS=396
"""


def test_results_md_is_generated_from_the_json_and_log(tmp_path, monkeypatch):
    results_md = load_results_md()
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    (folder / results_md.BENCH).write_text(json.dumps(synthetic_bench()))
    (folder / "repro-2026-11-01.log").write_text("train_baseline: done in 99.0 s, peak memory 1 MiB\n")
    (folder / "repro-2026-12-02.log").write_text(LOG)  # the newest by name wins
    monkeypatch.setattr(results_md, "ROOT", tmp_path)
    assert results_md.main(["--check"]) == 1, "no RESULTS.md yet"
    assert results_md.main([]) == 0
    text = (folder / "RESULTS.md").read_text()
    assert results_md.main(["--check"]) == 0
    for row in ("| (a) reference as published | 1 | 98.95 ± 0.21 | 51.0 ± 1.4 |",
                "| (c) our recipe | 2 | 99.30 ± 0.00 | 8.0 ± 0.0 |",
                "| 99.0 % | 101.0 | 24.0 | 4.0 | 4.2x | 6.0x | 25.2x |",
                "| 99.2 % | - | - | 8.0 | - | >3.0x | >12.6x |",
                "2026-12-01, commit abc1234; Test CPU, 2 cores", "(AVX2 yes, AVX-512F unknown)",
                "- (ii) time to 99.0 %, reference / ours >= 40x: not met",
                "## Full `dvc repro` (2026-12-02, commit def5678)", "Wall clock of the whole run: 396 s (6.6 min)",
                "| train_baseline | 22.1 | 1257 |", "| evaluate | 7.8 | - |", "highest peak 1257 MiB",
                "No select-cpu-2core.json yet: run `python -m mnistpipe.lab.bench --select"):
        assert row in text, row
    assert "| train_baseline | 99.0 |" not in text and "tuning" not in text.lower()
    (folder / "RESULTS.md").write_text(text.replace("25.2x", "26.2x"))
    assert results_md.main(["--check"]) == 1


def test_committed_results_md_equals_the_generated_one():
    """benchmarks/RESULTS.md is exactly what scripts/results_md.py makes of the committed JSON and log."""
    assert load_results_md().main(["--check"]) == 0, "regenerate it with `python scripts/results_md.py`"


def test_the_benchmark_recipe_is_the_committed_selections_pick():
    path = REPO_ROOT / "benchmarks" / "select-cpu-2core.json"
    assert path.exists(), "run `python -m mnistpipe.lab.bench --select --json benchmarks/select-cpu-2core.json`"
    sel = json.loads(path.read_text())
    assert not sel["quick"] and sel["recipe"], "the selection found no recipe"
    assert {k: sel["recipe"][k] for k in ("lr", "batch_size", "epochs")} == {
        k: bench.DEFAULT_HP[k] for k in ("lr", "batch_size", "epochs")}


def test_the_committed_selection_and_the_dae_part_use_params_yaml():
    """The selection scored on the pipeline's validation split, and the autoencoder part trains with the pipeline's
    train_dae settings: both read from params.yaml by `bench.main`, not written down twice."""
    from mnistpipe.lab.cli import read_params

    params = read_params(REPO_ROOT / "params.yaml")
    sel = json.loads((REPO_ROOT / "benchmarks" / "select-cpu-2core.json").read_text())
    assert (sel["val_size"], sel["split_seed"]) == (params.download.val_size, params.seed)
    dae = bench_parts.dae_settings(params)
    assert dae == {**params.train_dae.model_dump(include={"width", "skips", "lr", "batch_size", "weight_decay"}),
                   "seed": params.seed}
    committed = json.loads((REPO_ROOT / "benchmarks" / "bench-cpu-2core.json").read_text())
    assert committed["dae"]["batch_size"] == dae["batch_size"]
