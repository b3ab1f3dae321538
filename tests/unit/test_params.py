"""mnistpipe.params: the repository's params.yaml validates, and every kind of mistake gives one line naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mnistpipe import params
from mnistpipe.errors import PipelineError
from mnistpipe.params import CNNConfig, DAEConfig

PARAMS_YAML = Path(__file__).resolve().parents[2] / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


def fails(raw: dict, mutate, *expected: str) -> str:
    """Apply `mutate` to a deep copy, check validate raises a one-line error containing every `expected`."""
    bad = copy.deepcopy(raw)
    mutate(bad)
    with pytest.raises(PipelineError) as exc:
        params.validate(bad)
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert msg.startswith("params.yaml: "), msg
    for e in expected:
        assert e in msg, (e, msg)
    return msg


def test_repo_params_are_valid(raw):
    p = params.validate(raw)
    assert p.seed == raw["seed"]
    assert p.dropout == raw["dropout"] and p.kernel_size == raw["kernel_size"]
    assert p.recipe.channels == tuple(raw["recipe"]["channels"])
    assert set(params.SECTIONS) <= set(raw)
    assert p.train_dae.width == raw["train_dae"]["width"]
    assert p.baseline() == {k: raw[k] for k in params.BASELINE_KEYS}
    # The configs the networks are built from: the same values, in the configs' own types.
    assert p.cnn_config() == CNNConfig(**{k: raw[k] if k in raw else raw["recipe"][k] for k in CNNConfig.model_fields})
    assert p.cnn_config().dropout == raw["dropout"] and p.cnn_config().channels == tuple(raw["recipe"]["channels"])
    assert p.cnn_training() == {k: raw[k] if k in raw else raw["recipe"][k] for k in params.CNN_TRAINING}
    assert p.dae_config() == DAEConfig(width=raw["train_dae"]["width"], skips=raw["train_dae"]["skips"])


def test_validate_does_not_modify_its_input(raw):
    before = copy.deepcopy(raw)
    params.validate(raw)
    assert raw == before


def test_not_a_mapping():
    with pytest.raises(PipelineError, match="must be a mapping"):
        params.validate(None)
    with pytest.raises(PipelineError, match="my.yaml must be a mapping"):
        params.validate([1, 2], source="my.yaml")


def test_unknown_top_level_key_suggests_the_right_one(raw):
    def typo(r):
        r["droput"] = r.pop("dropout")

    msg = fails(raw, typo, "'droput'", "did you mean 'dropout'")
    # the typo, not the "missing dropout" it causes, is what the message leads with
    assert msg.startswith("params.yaml: unknown key 'droput'"), msg


def test_unknown_extra_top_level_key(raw):
    fails(raw, lambda r: r.update(learning_rate=0.1), "unknown key 'learning_rate'")


def test_device_is_one_top_level_key(raw):
    """One `device` beside `seed` (so `dvc exp run -S device=cpu` moves every stage); a `device` left inside a
    section (the old layout) is refused with one line."""
    def paths(node, at=()):
        for key, value in node.items():
            yield (*at, key)
            if isinstance(value, dict):
                yield from paths(value, (*at, key))

    assert [p for p in paths(raw) if p[-1] == "device"] == [("device",)]
    assert raw["device"] == "auto"
    for device in ("auto", "cpu", "cuda"):
        assert params.validate({**raw, "device": device}).device == device
    assert "device" not in params.SECTIONS
    fails(raw, lambda r: r.pop("device"), "missing key 'device'")
    for name in params.SECTIONS:
        fails(raw, lambda r, name=name: r[name].update(device="cpu"), f"unknown key '{name}.device'")


@pytest.mark.parametrize("section, key, suggestion", [
    ("train_dae", "widht", "width"),
    ("download", "val_szie", "val_size"),
    ("add_awgn", "sigma", None),
])
def test_unknown_key_inside_a_section(raw, section, key, suggestion):
    msg = fails(raw, lambda r: r[section].update({key: 1}), f"unknown key '{section}.{key}'")
    if suggestion:
        assert f"did you mean '{suggestion}'" in msg


def test_unknown_key_two_levels_deep(raw):
    fails(raw, lambda r: r["tune_cnn"]["sampler"].update(multivarite=True), "'tune_cnn.sampler.multivarite'",
          "did you mean 'multivariate'")


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r.update(epochs="3"), "'epochs'"),
    (lambda r: r.update(dropout="x"), "'dropout'"),
    (lambda r: r.update(kernel_size=3.0), "'kernel_size'"),
    (lambda r: r["recipe"].update(batchnorm=1), "'recipe.batchnorm'"),
    (lambda r: r["train_dae"].update(skips="yes"), "'train_dae.skips'"),
    (lambda r: r["recipe"].update(channels=32), "'recipe.channels'"),
    (lambda r: r.update(device="gpu"), "'device'"),
])
def test_wrong_type(raw, mutate, key):
    fails(raw, mutate, key)


@pytest.mark.parametrize("key, value", [
    ("dropout", 1.0), ("dropout", -0.1), ("lr", 0), ("lr", -1), ("epochs", 0), ("batch_size", 0),
    ("kernel_size", 0), ("stride", 0), ("seed", -1),
])
def test_out_of_range_top_level(raw, key, value):
    fails(raw, lambda r: r.update({key: value}), f"'{key}'", repr(value))


@pytest.mark.parametrize("section, key, value", [
    ("add_awgn", "std", -0.1),
    ("visualize", "tsne_size", 5),
    ("visualize", "tsne_threads", 0),
    ("download", "val_size", 0),
    ("train_dae", "lr", 0),
    ("recipe", "label_smoothing", 1.0),
    ("recipe", "convs_per_block", 0),
    ("tune_cnn", "budget", 0),
    ("tune_cnn", "n_trials", -1),
])
def test_out_of_range_in_a_section(raw, section, key, value):
    fails(raw, lambda r: r[section].update({key: value}), f"'{section}.{key}'")


def test_negative_channels(raw):
    fails(raw, lambda r: r["recipe"].update(channels=[32, -1]), "'recipe.channels'",
          "greater than or equal to 1", "-1")


@pytest.mark.parametrize("config_type, schemas", [
    (CNNConfig, (params.Params, params.Recipe)), (DAEConfig, (params.TrainDae,)),
])
def test_architecture_keys_are_checked_with_their_configs_types(config_type, schemas):
    """Each config field has a params.yaml key checked with the same type and range (one declaration)."""
    for name, expected in config_type.model_fields.items():
        schema = next((s for s in schemas if name in s.model_fields), None)
        assert schema is not None, f"params.yaml has no key for {config_type.__name__}.{name}"
        field = schema.model_fields[name]
        assert (field.annotation, field.metadata) == (expected.annotation, expected.metadata), name


@pytest.mark.parametrize("kernel_size, stride", [(3, 28), (3, 27), (3, 20)])
def test_kernel_stride_without_spatial_output(raw, kernel_size, stride):
    fails(raw, lambda r: r.update(kernel_size=kernel_size, stride=stride),
          f"kernel_size={kernel_size}", f"stride={stride}", "no spatial output")


def test_kernel_stride_check_counts_the_blocks(raw):
    # stride 16 (first conv only) leaves a 1x1 map after one block (28 -> 2 -> 1) but nothing after two
    ok = copy.deepcopy(raw)
    ok.update(kernel_size=3, stride=16)
    ok["recipe"]["channels"] = [8]
    params.validate(ok)
    ok["recipe"]["channels"] = [8, 16]
    fails(ok, lambda r: None, "no spatial output")


@pytest.mark.parametrize("section", ["evaluate", "download", "tune_cnn"])
def test_missing_section(raw, section):
    fails(raw, lambda r: r.pop(section), f"missing key '{section}'")


def test_missing_key_in_a_section(raw):
    fails(raw, lambda r: r["train_dae"].pop("width"), "missing key 'train_dae.width'")


@pytest.mark.parametrize("dim, low, high", [("epochs", 4, 2), ("dropout", 0.5, 0.1), ("lr", 0.01, 0.001)])
def test_search_space_low_above_high(raw, dim, low, high):
    def mutate(r):
        r["tune_cnn"]["space"][dim] = {"low": low, "high": high, "log": dim == "lr"}

    fails(raw, mutate, "tune_cnn.space", dim, "must not exceed")


def test_search_space_log_range_needs_positive_low(raw):
    def mutate(r):
        r["tune_cnn"]["space"]["lr"] = {"low": 0.0, "high": 0.01, "log": True}

    fails(raw, mutate, "tune_cnn.space", "lr", "log range")


@pytest.mark.parametrize("key, value", [("dropout", 0), ("train_dae.lr", 1), ("add_awgn.std", 0)])
def test_yaml_int_for_a_float_key_is_accepted(raw, key, value):
    ok = copy.deepcopy(raw)
    if "." in key:
        section, name = key.split(".")
        ok[section][name] = value
    else:
        ok[key] = value
    p = params.validate(ok)
    got = getattr(p, key) if "." not in key else getattr(getattr(p, section), name)
    assert got == value


def test_yaml_text_round_trip(raw):
    """The message names the key also when the mistake is typed as YAML, as a user would."""
    text = PARAMS_YAML.read_text().replace("\ndropout: 0.25", "\ndropout: 0.25\ndroput: 0", 1)
    assert "droput" in text
    with pytest.raises(PipelineError, match="unknown key 'droput' \\(did you mean 'dropout'\\?\\)"):
        params.validate(yaml.safe_load(text))


def test_tuned_hyperparameters_refuse_a_config_without_spatial_output(raw):
    hp = {k: raw[k] for k in params.BASELINE_KEYS} | raw["recipe"] | {"stride": 28}
    with pytest.raises(PipelineError, match="best.json: kernel_size=3 with stride=28 leaves no spatial output") as exc:
        params.tuned_hyperparameters({"hyperparameters": hp}, source="best.json", producer="tune_cnn")
    assert str(exc.value).endswith("rerun `dvc repro tune_cnn`")


def test_tuned_hyperparameters_accepts_a_complete_file_and_refuses_an_edited_one(raw):
    hp = {k: raw[k] for k in params.BASELINE_KEYS} | raw["recipe"]
    assert params.tuned_hyperparameters({"hyperparameters": hp}, source="best.json", producer="tune_cnn") == hp
    for bad in ({}, [], {"hyperparameters": {**hp, "extra": 1}}, {"hyperparameters": {"lr": 0.1}}):
        with pytest.raises(PipelineError, match="best.json does not hold the expected hyperparameters"):
            params.tuned_hyperparameters(bad, source="best.json", producer="tune_cnn")


def test_one_recipe_for_baseline_and_search(raw):
    """The recipe is one top-level section: the old per-stage copies are refused, so tuned vs baseline cannot mix
    two recipes again."""
    p = params.validate(raw)
    assert "recipe" in params.SECTIONS and p.recipe.label_smoothing == raw["recipe"]["label_smoothing"]
    fails(raw, lambda r: r["tune_cnn"].update(recipe=dict(r["recipe"])), "unknown key 'tune_cnn.recipe'")
    fails(raw, lambda r: r.update(train_baseline=dict(r["recipe"])), "unknown key 'train_baseline'")
    fails(raw, lambda r: r.pop("recipe"), "missing key 'recipe'")
    # The spatial check reads the shared recipe: one block makes stride 16 possible, as it should.
    ok = copy.deepcopy(raw)
    ok.update(stride=16)
    fails(ok, lambda r: None, "stride=16", "no spatial output")
    ok["recipe"]["channels"] = [8]
    assert params.validate(ok).stride == 16


@pytest.mark.parametrize("pruner", [
    {"kind": "median", "warmup_epochs": 0},
    {"kind": "hyperband", "min_resource": 1, "reduction_factor": 3},
    {"kind": "none"},
])
def test_pruner_kinds_validate(raw, pruner):
    ok = copy.deepcopy(raw)
    ok["tune_cnn"]["pruner"] = pruner
    assert params.validate(ok).tune_cnn.pruner.model_dump() == pruner


@pytest.mark.parametrize("pruner, expected", [
    ({"kind": "hyperbnd"}, ("'tune_cnn.pruner' needs kind: median, hyperband or none", "hyperbnd")),
    ({"warmup_epochs": 1}, ("'tune_cnn.pruner' needs kind",)),
    ({"kind": "hyperband", "min_resource": 1}, ("missing key 'tune_cnn.pruner.reduction_factor'",)),
    ({"kind": "hyperband", "min_resource": 1, "reduction_factor": 1}, ("'tune_cnn.pruner.reduction_factor'",
                                                                        "greater than or equal to 2")),
    ({"kind": "median", "warmup_epochs": 0, "min_resource": 2}, ("unknown key 'tune_cnn.pruner.min_resource'",)),
    ({"kind": "median", "warmup_epochs": -1}, ("'tune_cnn.pruner.warmup_epochs'",)),
    # epochs are the resource: a first rung beyond the longest trial (space.epochs high 5) could never be reached
    ({"kind": "hyperband", "min_resource": 9, "reduction_factor": 3}, ("min_resource (9) exceeds", "at most 5")),
])
def test_pruner_mistakes_are_one_line(raw, pruner, expected):
    assert raw["tune_cnn"]["space"]["epochs"]["high"] == 5
    fails(raw, lambda r: r["tune_cnn"].update(pruner=pruner), *expected)


def test_sampler_and_old_pruner_key(raw):
    fails(raw, lambda r: r["tune_cnn"]["sampler"].update(n_startup_trials=-1), "'tune_cnn.sampler.n_startup_trials'")
    fails(raw, lambda r: r["tune_cnn"]["sampler"].update(multivariate="yes"), "'tune_cnn.sampler.multivariate'")
    fails(raw, lambda r: r["tune_cnn"].update(pruner_warmup_epochs=1), "unknown key 'tune_cnn.pruner_warmup_epochs'")


def test_the_baseline_may_lie_outside_the_search_space(raw):
    """select_cnn scores the baseline itself, so the search need not be able to draw it: a baseline kernel the
    space lacks (`dvc exp run -S kernel_size=7`) is a valid run."""
    ok = copy.deepcopy(raw)
    ok.update(kernel_size=7, lr=0.05)
    assert params.validate(ok).kernel_size == 7


def _set(path: str, value):
    def mutate(raw: dict) -> None:
        node = raw
        *parents, last = path.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return mutate


# Every float key of the schema, written the ways YAML spells a non-finite number (.inf, -.inf, .nan).
FLOAT_KEYS = ["lr", "dropout", "download.timeout", "add_awgn.std", "recipe.weight_decay", "recipe.label_smoothing",
              "tune_cnn.budget", "train_dae.lr", "train_dae.weight_decay", "visualize.perplexity",
              "tune_cnn.space.lr.low", "tune_cnn.space.dropout.high"]


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_floats_are_refused(raw, key, value):
    fails(raw, _set(key, value), f"'{key}'", "finite")


@pytest.mark.parametrize("key", ["lr", "train_dae.lr"])
def test_an_absurd_learning_rate_is_refused_by_its_range(raw, key):
    fails(raw, _set(key, 1.0e300), f"'{key}'", "less than or equal to 10")


def test_yaml_inf_spelling_reaches_the_check(raw):
    text = yaml.safe_dump(raw).replace("\nlr: 0.003\n", "\nlr: .inf\n")
    fails(yaml.safe_load(text), lambda r: None, "'lr'", "finite")


def test_hyperband_min_resource_must_fit_the_epochs_of_the_space(raw):
    def mutate(r):
        r["tune_cnn"]["pruner"] = {"kind": "hyperband", "min_resource": 9, "reduction_factor": 3}

    fails(raw, mutate, "'tune_cnn.pruner'", "min_resource (9) exceeds the most epochs a trial runs")


def test_perplexity_must_be_below_the_tsne_size(raw):
    fails(raw, lambda r: r["visualize"].update(tsne_size=20, perplexity=20), "visualize", "perplexity=20",
          "tsne_size=20")
