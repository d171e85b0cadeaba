"""Every model of every table trains in its default (fastest) engine mode on a GPU.

CUDA only (skipped elsewhere): the CPU never compiles or captures graphs. A smoke run of each
of the 24 cells in `compile_mode="auto"` must finish with finite numbers, in the mode that
`rtlib.runtime.FASTEST_ON_CUDA` names, and train like the same run done eagerly (the smoke
models without dropout, so that both runs compute the same function).
"""
import math

import pytest
import torch

from rtlib.configs import MODELS, TABLE_TASKS, run_config, with_variant
from rtlib.runtime import FASTEST_ON_CUDA, Runtime
from rtlib.train import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="engine modes need a GPU")


# the widened rows first: the batch script gives these tests a fixed time on a shared GPU
@pytest.mark.parametrize("task,model", [("ptb-char", "rnn"), ("ptb-word", "gru")])
def test_a_widened_row_trains_like_its_configured_width(real_data, tmp_path, task, model):
    """The rows `rtlib.runtime.PADDED_WIDTH` widens, at their paper sizes for a few steps: the
    default engine runs them wider (rtlib.padding), and their losses match the configured width's.
    At lr 1: at the PTB-word GRU's lr 20 the first 20 steps are chaotic, and any rounding difference
    grows (batch as, H100: valid loss 20.72 wide against 21.83 narrow; on a CPU in fp32, 26.0
    against 15.4), while at lr 1 the two widths agreed on the CPU to 2e-7."""
    cfg = run_config(task, model, "paper", epochs=1, max_steps=20, precision="fp32", eval_limit=4000, lr=1.0)
    cfg = with_variant(cfg, "dropout=0,emb_dropout=0")
    wide = train(cfg, tmp_path / "wide", Runtime(device="cuda"), data_dir=real_data, log=lambda message: None)
    assert wide["engine"]["hidden_width"] > cfg.backbone.hidden_size
    narrow = train(cfg, tmp_path / "narrow", Runtime(device="cuda", pad_hidden="off"), data_dir=real_data,
                   log=lambda message: None)
    assert "hidden_width" not in narrow["engine"] and narrow["num_parameters"] == wide["num_parameters"]
    def losses(record):
        return [entry[key] for entry in record["curve"] for key in ("train_loss", "valid_loss", "test_loss")]
    assert losses(wide) == pytest.approx(losses(narrow), rel=1e-4)


@pytest.mark.parametrize("task", list(TABLE_TASKS.values()))
@pytest.mark.parametrize("model", MODELS)
def test_default_engine_mode_trains_every_cell_like_eager(real_data, tmp_path, task, model):
    cfg = run_config(task, model, "smoke", epochs=2, precision="fp32")
    cfg = with_variant(cfg, "dropout=0" + (",emb_dropout=0" if cfg.head is not None else ""))
    auto = train(cfg, tmp_path / "auto", Runtime(device="cuda", compile="auto"), data_dir=real_data,
                 log=lambda message: None)
    assert auto["engine"]["compile"] == FASTEST_ON_CUDA[model]
    assert all(math.isfinite(entry["train_loss"]) for entry in auto["curve"])
    eager = train(cfg, tmp_path / "eager", Runtime(device="cuda", compile="none"), data_dir=real_data,
                  log=lambda message: None)
    def losses(record):
        return [entry[key] for entry in record["curve"] for key in ("train_loss", "test_loss")]
    assert losses(auto) == pytest.approx(losses(eager), rel=1e-3)
