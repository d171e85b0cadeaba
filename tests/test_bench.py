"""The fast LocalRNN path's arithmetic and the benchmark's machinery (no timing assertions)."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rtlib.bench import REFERENCE_VARIANT, StepRunner, check_equivalence, step_flops, time_steps
from rtlib.configs import run_config, with_variant
from rtlib.models.local_rnn import LocalRNN

GATES = {"gru": 3, "lstm": 4, "rnn": 1}


def forward_flops(module: LocalRNN, x: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(x)
    return counter.get_total_flops()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fast_path_projects_each_input_once(cell):
    batch, length, d, window = 2, 30, 8, 5
    x = torch.randn(batch, length, d)
    gates = GATES[cell] * d
    # input projection once per padded position + (window - 1) hidden matmuls (h_0 = 0);
    # the released algorithm (cuDNN, not counted here) projects each input `window` times
    expected = (2 * batch * (length + window - 1) * d * gates
                + (window - 1) * 2 * batch * length * d * gates)
    assert forward_flops(LocalRNN(d, window, cell, "fast"), x) == expected


def test_bench_runner_times_steps_and_counts_flops_on_cpu(real_data, monkeypatch):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    cfg = run_config("ptb-word", "rtransformer", "smoke")
    runner = StepRunner(cfg, torch.device("cpu"), "fp32", None, fused=False)
    timing = time_steps(runner, warmup=1, repeats=2)
    assert timing["median_ms"] > 0 and timing["repeats"] == 2
    assert timing["tokens_per_s"] == pytest.approx(runner.tokens_per_step / (timing["median_ms"] / 1e3))
    assert step_flops(runner) > 0


@pytest.mark.parametrize("task", ["mnist", "nottingham", "ptb-word"])
def test_fast_path_matches_released_algorithm_in_a_training_step(real_data, monkeypatch, task):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    cfg = with_variant(run_config(task, "rtransformer", "smoke"), "window=3")
    errors = check_equivalence(cfg, torch.device("cpu"))
    assert errors["loss_rel_error"] < 1e-5
    assert errors["grad_rel_error"] < 1e-4, errors
    assert REFERENCE_VARIANT.startswith("local_rnn_impl=reference")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused cell kernels run on CUDA only")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_cuda_cells_match_reference(cell):
    torch.manual_seed(0)
    reference = LocalRNN(16, 4, cell, "reference").cuda()
    fast = LocalRNN(16, 4, cell, "fast").cuda()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(3, 20, 16, device="cuda", requires_grad=True)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-4, atol=1e-5)
