"""LocalRNN's GRU steps over all windows, with a hand-written backward (any hidden size).

The batched LocalRNN (local_rnn.py) runs the `window` recurrent steps of all B*L windows as
`window` matmuls plus gate math. Left to autograd, its backward is as many small pieces: a
weight-gradient matmul and a bias-gradient reduction per step, and the gradient of the input
projection assembled from `window` overlapping slices. This backward instead

- recomputes the gates of each step from the saved input and hidden projections (the forward
  keeps nothing else) and writes each step's gate gradients once;
- computes the W_hh gradient as one matmul over all steps, and the b_hh gradient as one sum;
- adds the `window` shifted input-gate gradients into the projection's gradient in one pass.

Numerically it is nn.GRU's cell, gate order (r, z, n), n = tanh(x_n + r * (W_hn h + b_hn));
gate math in fp32, stored in the inputs' dtype (bf16 under autocast).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gru_steps(projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, batch: int,
              window: int) -> torch.Tensor:
    """Last hidden state (L*B, d) of every window.

    `projected` is the padded, time-major input projection ((L+window-1)*B, 3d): step j of
    window i reads row i + j*B. `w_hh` (3d, d) and `b_hh` (3d,) have its dtype.
    """
    return GRUSteps.apply(projected, w_hh, b_hh, batch, window)


class GRUSteps(torch.autograd.Function):

    @staticmethod
    def forward(ctx, projected, w_hh, b_hh, batch, window):
        windows = projected.shape[0] - (window - 1) * batch
        states, hidden_gates = [], []  # hidden state entering, and W_hh h + b_hh of, steps 1..
        h = _step(projected[:windows], b_hh.expand(windows, -1), None)
        for step in range(1, window):
            states.append(h)
            hidden_gates.append(torch.addmm(b_hh, h, w_hh.t()))
            h = _step(projected[step * batch: step * batch + windows], hidden_gates[-1], h)
        ctx.batch, ctx.window = batch, window
        ctx.save_for_backward(projected, w_hh, b_hh, *states, *hidden_gates)
        return h

    @staticmethod
    def backward(ctx, grad_h):
        projected, w_hh, b_hh, *saved = ctx.saved_tensors
        batch, window = ctx.batch, ctx.window
        states, hidden_gates = saved[:window - 1], saved[window - 1:]
        windows = grad_h.shape[0]
        grad_h = grad_h.contiguous()
        grad_inputs, grad_hidden = [None] * window, [None] * window
        for step in reversed(range(window)):
            inputs = projected[step * batch: step * batch + windows]
            if step:
                grad_inputs[step], grad_hidden[step], grad_direct = _step_backward(
                    inputs, hidden_gates[step - 1], states[step - 1], grad_h)
                grad_h = torch.addmm(grad_direct, grad_hidden[step], w_hh)
            else:
                grad_inputs[0], grad_hidden[0], _ = _step_backward(
                    inputs, b_hh.expand(windows, -1), None, grad_h)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] and window > 1:
            grad_w = torch.cat(grad_hidden[1:]).t() @ torch.cat(states)
        elif ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(w_hh)
        if ctx.needs_input_grad[2]:
            grad_b = sum(_wide(g).sum(0) for g in grad_hidden).to(b_hh.dtype)
        # step j's input-gate gradient belongs to projection rows j*B .. j*B + windows - 1
        pad = (window - 1) * batch
        grad_projected = sum(F.pad(g, (0, 0, step * batch, pad - step * batch))
                             for step, g in enumerate(grad_inputs))
        return grad_projected, grad_w, grad_b, None, None


def _wide(x: torch.Tensor) -> torch.Tensor:
    """x in at least fp32: the gate math's precision."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _gates(inputs, hidden_gates):
    in_r, in_z, in_n = _wide(inputs).chunk(3, dim=-1)
    h_r, h_z, h_n = _wide(hidden_gates).chunk(3, dim=-1)
    reset = torch.sigmoid(in_r + h_r)
    update = torch.sigmoid(in_z + h_z)
    return reset, update, torch.tanh(in_n + reset * h_n), h_n


def _step(inputs, hidden_gates, h):
    _, update, candidate, _ = _gates(inputs, hidden_gates)
    if h is None:  # h_0 = 0
        return ((1 - update) * candidate).to(inputs.dtype)
    return (candidate + update * (_wide(h) - candidate)).to(inputs.dtype)


def _step_backward(inputs, hidden_gates, h, grad_h):
    """Gradients of one step's input gates, hidden gates and (directly) its input state."""
    reset, update, candidate, h_n = _gates(inputs, hidden_gates)
    grad_h = _wide(grad_h)
    previous = 0.0 if h is None else _wide(h)
    grad_n = grad_h * (1 - update) * (1 - candidate * candidate)
    grad_r = grad_n * h_n * reset * (1 - reset)
    grad_z = grad_h * (previous - candidate) * update * (1 - update)
    dtype = inputs.dtype
    grad_inputs = torch.cat((grad_r, grad_z, grad_n), dim=-1).to(dtype)
    grad_hidden = torch.cat((grad_r, grad_z, grad_n * reset), dim=-1).to(dtype)
    return grad_inputs, grad_hidden, (grad_h * update).to(dtype)
