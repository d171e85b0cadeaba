"""Golden records: the whole record of a smoke run per task, pinned on the CPU.

`tests/test_golden.py` pins the numbers of every table x model; this file pins everything else a
record says -- its config, run id, selections, engine, deviations, parameter count, changes --
so that a refactor of the engine cannot change what a record holds or how it names its run.
Only what depends on the clock or the machine is left out. A change that *means* to change a
record regenerates the file with ``RTLIB_UPDATE_GOLDEN=1 pytest tests/test_golden_records.py``
and says why in its commit (and bumps `record_version` if old records read differently).
"""
import json
from pathlib import Path

import pytest

from rtlib.configs import run_config, with_variant
from rtlib.train import train

GOLDEN = Path(__file__).parent / "golden" / "smoke_records.json"
MACHINE = ("wall_time_s", "gpu_minutes", "finished_at", "content_sha256", "git_commit", "device",
           "torch_version")
RUNS = {
    "mnist": ("mnist", "rtransformer", ""),
    "pmnist": ("pmnist", "tcn", ""),
    "nottingham": ("nottingham", "rtransformer", ""),
    "nottingham-clip-after-backward": ("nottingham", "transformer", "clip_before_backward=false"),
    "jsb": ("jsb", "gru", ""),
    "ptb-char": ("ptb-char", "rtransformer", ""),
    "ptb-word": ("ptb-word", "lstm", ""),
    "ptb-word-post-norm": ("ptb-word", "rtransformer", "norm=post,window=3"),
}


def pinned(record: dict) -> dict:
    kept = {key: value for key, value in record.items() if key not in MACHINE}
    kept["curve"] = [{k: v for k, v in entry.items() if k != "elapsed_s"} for entry in record["curve"]]
    return kept


def approx(value):
    """Floats to 1e-6 inside any nesting; everything else exactly."""
    if isinstance(value, dict):
        return {key: approx(item) for key, item in value.items()}
    if isinstance(value, list):
        return [approx(item) for item in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-6)
    return value


@pytest.mark.parametrize("name", list(RUNS))
def test_smoke_record_is_its_golden_record(golden, real_data, tmp_path, name):
    task, model, variant = RUNS[name]
    cfg = with_variant(run_config(task, model, "smoke"), variant)
    record = pinned(train(cfg, tmp_path / "run", data_dir=real_data, log=lambda message: None))
    record = json.loads(json.dumps(record))  # as a record file holds it (tuples as lists)
    expected = golden(GOLDEN, name, record)
    if expected is None:
        return
    assert sorted(record) == sorted(expected)
    for key in expected:
        assert record[key] == approx(expected[key]), key
