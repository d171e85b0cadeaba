"""Golden numbers: the smoke run of every table x model on the CPU, pinned.

A refactor must not change what a run computes. These curves (train, valid and test loss per
epoch, and the final test metric) were recorded by this file and are compared to 1e-6; a change
that *means* to change them regenerates the file with ``RTLIB_UPDATE_GOLDEN=1 pytest
tests/test_golden.py`` and says why in its commit.
"""
import json
import os
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


@pytest.fixture(scope="module")
def golden():
    if os.environ.get("RTLIB_UPDATE_GOLDEN") == "1":
        return {}
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("task,model", CELLS)
def test_smoke_run_computes_its_golden_numbers(golden, real_data, tmp_path, task, model):
    numbers = smoke_numbers(task, model, real_data, tmp_path)
    if os.environ.get("RTLIB_UPDATE_GOLDEN") == "1":
        saved = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({**saved, f"{task}/{model}": numbers}, indent=1, sort_keys=True) + "\n")
        return
    expected = golden[f"{task}/{model}"]
    assert numbers["curve"] == [pytest.approx(entry, rel=1e-6) for entry in expected["curve"]]
    assert numbers["test_metric"] == pytest.approx(expected["test_metric"], rel=1e-6)
