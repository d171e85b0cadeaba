"""The fused Triton GRU-window kernels against the batched-matmul LocalRNN path.

Without a GPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py
before anything imports Triton), so their arithmetic is checked on every CI machine.
"""
from types import SimpleNamespace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from rtlib.kernels import gru_windows
from rtlib.models.local_rnn import LocalRNN, gru_update

pytestmark = pytest.mark.skipif(gru_windows.triton is None, reason="needs triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_cuda = pytest.mark.skipif(DEVICE != "cuda", reason="runs on CUDA only")


def batched_windows(projected, w_hh, b_hh, batch, window):
    """The fast path's M batched steps on the same padded time-major projection."""
    windows = projected.shape[0] - (window - 1) * batch
    h = None
    for step in range(window):
        gates_in = projected[step * batch: step * batch + windows]
        gates_h = b_hh.expand_as(gates_in) if h is None else torch.nn.functional.linear(h, w_hh, b_hh)
        h = gru_update(gates_in.float(), gates_h.float(), h)
    return h


def inputs(batch, length, d, window, dtype):
    g = torch.Generator().manual_seed(0)
    rows = (length + window - 1) * batch
    tensors = (torch.randn(rows, 3 * d, generator=g), 0.3 * torch.randn(3 * d, d, generator=g),
               torch.randn(3 * d, generator=g))
    return [t.to(DEVICE, dtype).requires_grad_() for t in tensors]


# the CUDA cases first: on a shared GPU the batch script gives this file a fixed time, and
# batch ar's timeout cut it after 3 of 10 cases, before these
def local_rnn_pair():
    torch.manual_seed(0)
    fast, batched = LocalRNN(32, 7, "gru", "fast").cuda(), LocalRNN(32, 7, "gru", "batched").cuda()
    batched.load_state_dict(fast.state_dict())
    return fast, batched, torch.randn(4, 50, 32, device="cuda")


@needs_cuda
def test_local_rnn_fast_uses_the_kernels_under_autocast(monkeypatch):
    fast, batched, x = local_rnn_pair()
    calls = []
    kernels = gru_windows.gru_windows
    monkeypatch.setattr(gru_windows, "gru_windows", lambda *args: calls.append(1) or kernels(*args))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, expected = fast(x), batched(x)
    assert calls == [1]
    assert (got.float() - expected.float()).abs().max() < 0.05


@needs_cuda
def test_local_rnn_fast_in_fp32_is_the_batched_path(monkeypatch):
    fast, batched, x = local_rnn_pair()
    monkeypatch.setattr(gru_windows, "gru_windows", None)  # a call would fail
    assert torch.equal(fast(x), batched(x))


@pytest.mark.parametrize("batch, length, d, window", [(3, 30, 16, 4), (2, 50, 32, 7), (5, 3, 16, 1)])
def test_kernels_match_batched_steps_in_fp32(batch, length, d, window):
    projected, w_hh, b_hh = inputs(batch, length, d, window, torch.float32)
    expected = batched_windows(projected, w_hh, b_hh, batch, window)
    got = gru_windows.gru_windows(projected, w_hh, b_hh, batch, window)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(got, (projected, w_hh, b_hh), grad),
                            torch.autograd.grad(expected, (projected, w_hh, b_hh), grad,
                                                materialize_grads=True)):  # window=1: no W_hh
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)


@needs_cuda  # Triton's CPU interpreter multiplies bf16 tiles wrongly (checked with Triton 3.9)
def test_kernels_in_bf16_stay_close_to_fp32():
    batch, length, d, window = 2, 40, 32, 7
    exact = inputs(batch, length, d, window, torch.float32)
    low = [t.detach().to(torch.bfloat16).requires_grad_() for t in exact]
    expected = gru_windows.gru_windows(*exact, batch, window)
    got = gru_windows.gru_windows(*low, batch, window)
    assert got.dtype == torch.bfloat16
    assert (got.float() - expected).abs().max() < 0.05
    grad = torch.randn_like(expected)
    for mine, theirs in zip(torch.autograd.grad(got, low, grad.bfloat16()),
                            torch.autograd.grad(expected, exact, grad)):
        assert mine.dtype == torch.bfloat16
        assert (mine.float() - theirs).norm() / theirs.norm() < 0.02


def test_custom_op_registration_passes_opcheck():
    projected, w_hh, b_hh = inputs(2, 6, 16, 3, torch.float32)
    torch.library.opcheck(torch.ops.rtlib.gru_windows.default, (projected, w_hh, b_hh, 2, 3))


def test_flop_counter_counts_the_kernels_matmuls():
    batch, length, d, window = 2, 6, 16, 3
    projected, w_hh, b_hh = inputs(batch, length, d, window, torch.float32)
    counter = FlopCounterMode(display=False)
    with counter:
        gru_windows.gru_windows(projected, w_hh, b_hh, batch, window).sum().backward()
    recurrent = 2 * (batch * length) * (3 * d) * d * (window - 1)  # W_hh h, steps 2..window
    assert counter.get_total_flops() == 3 * recurrent  # forward, gradient of h, gradient of W_hh


def test_bad_shapes_are_refused():
    projected, w_hh, b_hh = inputs(2, 6, 16, 3, torch.float32)
    with pytest.raises(ValueError, match="do not fit"):
        gru_windows.forward(projected[:, :40], w_hh, b_hh, 2, 3)
    with pytest.raises(ValueError, match="batch=3"):
        gru_windows.forward(projected, w_hh, b_hh, 3, 3)


def test_fast_path_sends_the_kernels_half_precision_only():
    def cuda_input(dtype):  # what `supported` reads of a tensor, without a GPU
        return SimpleNamespace(is_cuda=True, dtype=dtype)
    assert gru_windows.supported("gru", 32, cuda_input(torch.bfloat16))
    assert gru_windows.supported("gru", 64, cuda_input(torch.float16))
    assert not gru_windows.supported("gru", 32, cuda_input(torch.float32))
    assert not gru_windows.supported("gru", 128, cuda_input(torch.bfloat16))
    assert not gru_windows.supported("lstm", 32, cuda_input(torch.bfloat16))
    assert not gru_windows.supported("gru", 32, SimpleNamespace(is_cuda=False, dtype=torch.bfloat16))
