"""Golden numbers: the smoke run of every table x model on the CPU, pinned.

A refactor must not change what a run computes. These curves (train, valid and test loss per
epoch, and the final test metric) were recorded by this file and are compared to 1e-6; a change
that *means* to change them regenerates the file with ``RTLIB_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and says why in its commit.
"""
from pathlib import Path

import pytest

from rtlib.configs import MODELS, TABLE_TASKS, run_config
from rtlib.train import train

GOLDEN = Path(__file__).parent / "golden" / "smoke_curves.json"
LOSSES = ("train_loss", "valid_loss", "test_loss")
CELLS = [(task, model) for task in TABLE_TASKS.values() for model in MODELS]


def smoke_numbers(task: str, model: str, data_dir: Path, out: Path) -> dict:
    record = train(run_config(task, model, "smoke"), out, data_dir=data_dir, log=lambda message: None)
    return dict(curve=[{key: entry[key] for key in LOSSES if key in entry} for entry in record["curve"]],
                test_metric=record["test_metric"])


@pytest.mark.parametrize("task,model", CELLS)
def test_smoke_run_computes_its_golden_numbers(golden, real_data, tmp_path, task, model):
    numbers = smoke_numbers(task, model, real_data, tmp_path)
    expected = golden(GOLDEN, f"{task}/{model}", numbers)
    if expected is None:
        return
    # a few fp32 ulps a step apart across CPUs (AVX-512 with and without AMX), grown over the steps
    assert numbers["curve"] == [pytest.approx(entry, rel=1e-5) for entry in expected["curve"]]
    assert numbers["test_metric"] == pytest.approx(expected["test_metric"], rel=1e-5)
