"""docs/gpu.md's strong-settings line: `dvc exp run -S` must accept every override and the result must pass the
schema."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import yaml

from mnistpipe import params

ROOT = Path(__file__).resolve().parents[2]


def strong_overrides() -> list[str]:
    block = re.search(r"<!-- strong:start -->\s*```bash\n(.*?)```", (ROOT / "docs" / "gpu.md").read_text(), re.S)
    assert block, "docs/gpu.md lost its strong-settings block"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[:3] == ["dvc", "exp", "run"]
    return [words[i + 1] for i, w in enumerate(words) if w == "-S"]


def test_strong_settings_apply_and_validate(tmp_path):
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` itself calls

    overrides = strong_overrides()
    assert len(overrides) >= 10
    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    apply_overrides(path, overrides)
    raw = yaml.safe_load(path.read_text())
    params.validate(raw)
    assert raw["recipe"]["channels"] == [64, 128]
    assert raw["tune_cnn"]["space"]["epochs"] == {"low": 10, "high": 15}
    assert raw["train_dae"]["width"] == 32
    # nothing else changed
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert raw["seed"] == base["seed"] and raw["dataset"] == base["dataset"]
