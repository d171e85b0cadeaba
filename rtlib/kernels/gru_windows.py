"""LocalRNN's GRU windows in two fused Triton kernels, for small hidden sizes (Table 1: d=32).

The fast LocalRNN (rtlib/models/local_rnn.py) runs the `window` recurrent steps of all B*L
windows as `window` batched matmuls plus gate kernels. With d=32 every one of those kernels is
tiny, so a step of Table 1's 16 LocalRNNs is a few hundred launches that each move the
(B*L, 3d) gate tensors through GPU memory. Here one program instead owns a block of windows, keeps
their hidden state in registers and runs all `window` steps (the d x 3d recurrent weights fit
in registers too):

- forward: reads each step's input projection P[row + step*B] (a slice of the padded,
  time-major projection, as in the fast path), writes the last hidden state and the hidden
  state before every step (for the backward);
- backward: walks the steps in reverse, recomputes the gates from the saved states, and
  writes the gradient of every step's input projection; the gradient of W_hh and b_hh is
  summed per program (no atomics: deterministic) and the programs' partial sums are added up
  afterwards. A second kernel adds each projection row's `window` contributions.

Numerically it is nn.GRU's cell: gate order (r, z, n), n = tanh(x_n + r * (W_hn h + b_hn)).
The hidden state stays in fp32 across steps; matmul operands have the projection's dtype
(bf16 under autocast). fp32 inputs multiply in IEEE fp32 (no TF32): the tests check the kernels'
arithmetic that way, but the fast LocalRNN sends them only half-precision inputs (`supported`).

`torch.library.custom_op` makes the pair one opaque op with its own autograd formula, so
torch.compile and CUDA graphs treat it like any other kernel.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: LocalRNN falls back to its batched-matmul path
    triton = None

MAX_HIDDEN = 64  # registers hold BLOCK x d tiles and three d x d weight blocks
BLOCK_WINDOWS = 64
FORWARD_WARPS, BACKWARD_WARPS = 4, 4


def supported(cell: str, d: int, x: torch.Tensor) -> bool:
    """Whether the fast LocalRNN hands this input to `gru_windows`: CUDA, GRU, d a power of 2 in
    16..64, and bf16 or fp16. fp32 stays on the batched path: there the kernels' IEEE-fp32 dots
    run without tensor cores, and Table 1's fp32 step took 121.04 ms with them against 39.62 ms
    batched (one H100, results/bench/diagnostics/engine_modes_fp32_t1_*)."""
    return (triton is not None and x.is_cuda and cell == "gru" and 16 <= d <= MAX_HIDDEN
            and d & (d - 1) == 0 and x.dtype in (torch.bfloat16, torch.float16))


if triton is not None:

    @triton.jit
    def _sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _tanh(x):
        return 2.0 * _sigmoid(2.0 * x) - 1.0

    @triton.jit
    def _load_gates(projected, rows, cols, mask, D: tl.constexpr):
        """The r, z, n input projections of `rows` (fp32 tiles)."""
        base = projected + rows[:, None] * (3 * D) + cols[None, :]
        return (tl.load(base, mask=mask, other=0.0).to(tl.float32),
                tl.load(base + D, mask=mask, other=0.0).to(tl.float32),
                tl.load(base + 2 * D, mask=mask, other=0.0).to(tl.float32))

    @triton.jit
    def _hidden_gates(h, w_r, w_z, w_n, b_r, b_z, b_n, PRECISION: tl.constexpr):
        """W_h* h + b_h* for the three gates; w_* are d x d blocks laid out (k, n)."""
        h = h.to(w_r.dtype)
        return (tl.dot(h, w_r, input_precision=PRECISION) + b_r[None, :],
                tl.dot(h, w_z, input_precision=PRECISION) + b_z[None, :],
                tl.dot(h, w_n, input_precision=PRECISION) + b_n[None, :])

    @triton.jit
    def _bias_tiles(b_r, b_z, b_n, BLOCK: tl.constexpr):
        """The hidden gates of h_0 = 0: the biases, as full tiles (both branches of a step
        must give tiles of one shape)."""
        zeros = tl.zeros((BLOCK, b_r.shape[0]), tl.float32)
        return zeros + b_r[None, :], zeros + b_z[None, :], zeros + b_n[None, :]

    @triton.jit
    def _gru_windows_forward(projected, w_hh, b_hh, out, states, windows, batch,
                             D: tl.constexpr, WINDOW: tl.constexpr, BLOCK: tl.constexpr,
                             PRECISION: tl.constexpr):
        rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        cols = tl.arange(0, D)
        mask = (rows < windows)[:, None]
        # transposed blocks (k, n) = W_hh[gate*D + n, k], so that h @ block = W h; held in
        # registers for all the steps (reading them at every step was twice as slow)
        w_t = w_hh + cols[None, :] * D + cols[:, None]
        w_r, w_z, w_n = tl.load(w_t), tl.load(w_t + D * D), tl.load(w_t + 2 * D * D)
        b_r = tl.load(b_hh + cols).to(tl.float32)
        b_z = tl.load(b_hh + D + cols).to(tl.float32)
        b_n = tl.load(b_hh + 2 * D + cols).to(tl.float32)
        tile = rows[:, None] * D + cols[None, :]
        h = tl.zeros((BLOCK, D), tl.float32)
        for step in tl.static_range(WINDOW):
            in_r, in_z, in_n = _load_gates(projected, rows + step * batch, cols, mask, D)
            if step == 0:  # h_0 = 0
                h_r, h_z, h_n = _bias_tiles(b_r, b_z, b_n, BLOCK)
            else:
                tl.store(states + (step - 1) * windows * D + tile, h.to(states.dtype.element_ty), mask=mask)
                h_r, h_z, h_n = _hidden_gates(h, w_r, w_z, w_n, b_r, b_z, b_n, PRECISION)
            reset = _sigmoid(in_r + h_r)
            update = _sigmoid(in_z + h_z)
            candidate = _tanh(in_n + reset * h_n)
            h = candidate + update * (h - candidate)
        tl.store(out + tile, h.to(out.dtype.element_ty), mask=mask)

    @triton.jit
    def _gru_windows_backward(projected, w_hh, b_hh, states, grad_out, grad_steps, grad_w, grad_b,
                              windows, batch, D: tl.constexpr, WINDOW: tl.constexpr,
                              BLOCK: tl.constexpr, PRECISION: tl.constexpr):
        program = tl.program_id(0)
        rows = program * BLOCK + tl.arange(0, BLOCK)
        cols = tl.arange(0, D)
        mask = (rows < windows)[:, None]
        # the forward's (k, n) blocks and the (n, k) ones, held in registers
        w_t = w_hh + cols[None, :] * D + cols[:, None]
        w_r, w_z, w_n = tl.load(w_t), tl.load(w_t + D * D), tl.load(w_t + 2 * D * D)
        w = w_hh + cols[:, None] * D + cols[None, :]  # (n, k) = W_hh[gate*D + n, k]
        v_r, v_z, v_n = tl.load(w), tl.load(w + D * D), tl.load(w + 2 * D * D)
        b_r = tl.load(b_hh + cols).to(tl.float32)
        b_z = tl.load(b_hh + D + cols).to(tl.float32)
        b_n = tl.load(b_hh + 2 * D + cols).to(tl.float32)
        tile = rows[:, None] * D + cols[None, :]
        grad_h = tl.load(grad_out + tile, mask=mask, other=0.0).to(tl.float32)
        gw_r = tl.zeros((D, D), tl.float32)
        gw_z = tl.zeros((D, D), tl.float32)
        gw_n = tl.zeros((D, D), tl.float32)
        gb_r = tl.zeros((D,), tl.float32)
        gb_z = tl.zeros((D,), tl.float32)
        gb_n = tl.zeros((D,), tl.float32)
        for back in tl.static_range(WINDOW):
            step = WINDOW - 1 - back
            in_r, in_z, in_n = _load_gates(projected, rows + step * batch, cols, mask, D)
            if step == 0:
                h = tl.zeros((BLOCK, D), tl.float32)
                h_r, h_z, h_n = _bias_tiles(b_r, b_z, b_n, BLOCK)
            else:
                h = tl.load(states + (step - 1) * windows * D + tile, mask=mask, other=0.0).to(tl.float32)
                h_r, h_z, h_n = _hidden_gates(h, w_r, w_z, w_n, b_r, b_z, b_n, PRECISION)
            reset = _sigmoid(in_r + h_r)
            update = _sigmoid(in_z + h_z)
            candidate = _tanh(in_n + reset * h_n)
            # h' = candidate + update * (h - candidate)
            grad_n = grad_h * (1.0 - update) * (1.0 - candidate * candidate)
            grad_z = grad_h * (h - candidate) * update * (1.0 - update)
            grad_r = grad_n * h_n * reset * (1.0 - reset)
            grad_hn = grad_n * reset
            out = grad_steps + step * windows * 3 * D + rows[:, None] * (3 * D) + cols[None, :]
            dtype = grad_steps.dtype.element_ty
            tl.store(out, grad_r.to(dtype), mask=mask)
            tl.store(out + D, grad_z.to(dtype), mask=mask)
            tl.store(out + 2 * D, grad_n.to(dtype), mask=mask)
            gb_r += tl.sum(grad_r, 0)
            gb_z += tl.sum(grad_z, 0)
            gb_n += tl.sum(grad_hn, 0)
            if step > 0:
                h_low = h.to(w_r.dtype)
                d_r, d_z, d_n = grad_r.to(w_r.dtype), grad_z.to(w_r.dtype), grad_hn.to(w_r.dtype)
                gw_r += tl.dot(tl.trans(d_r), h_low, input_precision=PRECISION)
                gw_z += tl.dot(tl.trans(d_z), h_low, input_precision=PRECISION)
                gw_n += tl.dot(tl.trans(d_n), h_low, input_precision=PRECISION)
                grad_h = (grad_h * update + tl.dot(d_r, v_r, input_precision=PRECISION)
                          + tl.dot(d_z, v_z, input_precision=PRECISION)
                          + tl.dot(d_n, v_n, input_precision=PRECISION))
        square = cols[:, None] * D + cols[None, :]
        part_w = grad_w + program * 3 * D * D + square
        tl.store(part_w, gw_r)
        tl.store(part_w + D * D, gw_z)
        tl.store(part_w + 2 * D * D, gw_n)
        part_b = grad_b + program * 3 * D + cols
        tl.store(part_b, gb_r)
        tl.store(part_b + D, gb_z)
        tl.store(part_b + 2 * D, gb_n)

    @triton.jit
    def _sum_step_gradients(grad_steps, grad_projected, rows_total, windows, batch, width,
                            WINDOW: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr):
        """grad_projected[p] = sum over steps s of grad_steps[s, p - s*batch] (where in range)."""
        rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
        cols = tl.program_id(1) * BLOCK_COLS + tl.arange(0, BLOCK_COLS)
        in_cols = (cols < width)[None, :]
        total = tl.zeros((BLOCK_ROWS, BLOCK_COLS), tl.float32)
        for step in tl.static_range(WINDOW):
            window = rows - step * batch
            mask = ((window >= 0) & (window < windows))[:, None] & in_cols
            offsets = step * windows * width + window[:, None] * width + cols[None, :]
            total += tl.load(grad_steps + offsets, mask=mask, other=0.0).to(tl.float32)
        keep = (rows < rows_total)[:, None] & in_cols
        tl.store(grad_projected + rows[:, None] * width + cols[None, :],
                 total.to(grad_projected.dtype.element_ty), mask=keep)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _check(projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, batch: int, window: int) -> int:
    d = w_hh.shape[1]
    if projected.dim() != 2 or projected.shape[1] != 3 * d or w_hh.shape != (3 * d, d) or b_hh.shape != (3 * d,):
        raise ValueError(f"gru_windows: projected {tuple(projected.shape)}, w_hh {tuple(w_hh.shape)} and "
                         f"b_hh {tuple(b_hh.shape)} do not fit (R, 3d), (3d, d), (3d,)")
    windows = projected.shape[0] - (window - 1) * batch
    if windows <= 0 or windows % batch:
        raise ValueError(f"gru_windows: {projected.shape[0]} projection rows do not hold "
                         f"(length + {window - 1}) x batch={batch} positions")
    return windows


def forward(projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, batch: int,
            window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel: (last hidden states (N, d), states before steps 1.. (window-1, N, d))."""
    windows = _check(projected, w_hh, b_hh, batch, window)
    d = w_hh.shape[1]
    out = projected.new_empty(windows, d)
    states = projected.new_empty(window - 1, windows, d)
    grid = (triton.cdiv(windows, BLOCK_WINDOWS),)
    _gru_windows_forward[grid](projected, w_hh, b_hh, out, states, windows, batch, D=d, WINDOW=window,
                               BLOCK=BLOCK_WINDOWS, PRECISION=_precision(projected.dtype),
                               num_warps=FORWARD_WARPS)
    return out, states


def backward(grad_out: torch.Tensor, projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor,
             states: torch.Tensor, batch: int, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of (projected, w_hh, b_hh) from the gradient of the last hidden states."""
    windows = _check(projected, w_hh, b_hh, batch, window)
    d = w_hh.shape[1]
    programs = triton.cdiv(windows, BLOCK_WINDOWS)
    grad_steps = projected.new_empty(window, windows, 3 * d)
    grad_w = torch.empty(programs, 3 * d, d, device=projected.device, dtype=torch.float32)
    grad_b = torch.empty(programs, 3 * d, device=projected.device, dtype=torch.float32)
    _gru_windows_backward[(programs,)](projected, w_hh, b_hh, states, grad_out.contiguous(), grad_steps,
                                       grad_w, grad_b, windows, batch, D=d, WINDOW=window,
                                       BLOCK=BLOCK_WINDOWS, PRECISION=_precision(projected.dtype),
                                       num_warps=BACKWARD_WARPS)
    grad_projected = torch.empty_like(projected)
    rows, width = projected.shape
    block_rows, block_cols = 32, 128
    _sum_step_gradients[(triton.cdiv(rows, block_rows), triton.cdiv(width, block_cols))](
        grad_steps, grad_projected, rows, windows, batch, width, WINDOW=window,
        BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols)
    return grad_projected, grad_w.sum(0).to(w_hh.dtype), grad_b.sum(0).to(b_hh.dtype)


@torch.library.custom_op("rtlib::gru_windows", mutates_args=())
def _gru_windows(projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, batch: int,
                 window: int) -> tuple[torch.Tensor, torch.Tensor]:
    return forward(projected, w_hh, b_hh, batch, window)


@_gru_windows.register_fake
def _(projected, w_hh, b_hh, batch, window):
    windows, d = projected.shape[0] - (window - 1) * batch, w_hh.shape[1]
    return projected.new_empty(windows, d), projected.new_empty(window - 1, windows, d)


@torch.library.custom_op("rtlib::gru_windows_backward", mutates_args=())
def _gru_windows_backward_op(grad_out: torch.Tensor, projected: torch.Tensor, w_hh: torch.Tensor,
                             b_hh: torch.Tensor, states: torch.Tensor, batch: int,
                             window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return backward(grad_out, projected, w_hh, b_hh, states, batch, window)


@_gru_windows_backward_op.register_fake
def _(grad_out, projected, w_hh, b_hh, states, batch, window):
    return torch.empty_like(projected), torch.empty_like(w_hh), torch.empty_like(b_hh)


def _setup_context(ctx, inputs, output):
    projected, w_hh, b_hh, batch, window = inputs
    ctx.save_for_backward(projected, w_hh, b_hh, output[1])
    ctx.batch, ctx.window = batch, window


def _backward(ctx, grad_out, _grad_states):
    projected, w_hh, b_hh, states = ctx.saved_tensors
    grads = _gru_windows_backward_op(grad_out, projected, w_hh, b_hh, states, ctx.batch, ctx.window)
    return *grads, None, None


_gru_windows.register_autograd(_backward, setup_context=_setup_context)


def recurrent_flops(projected_shape, w_hh_shape, batch: int, window: int) -> int:
    """The forward's matmul FLOPs: W_hh h at the window-1 steps after the first, every window."""
    windows = projected_shape[0] - (window - 1) * batch
    gates, d = w_hh_shape
    return 2 * windows * gates * d * (window - 1)


# so that FlopCounterMode (the benchmark's MFU) counts the matmuls done inside the kernels
@register_flop_formula(torch.ops.rtlib.gru_windows)
def _(projected, w_hh, b_hh, batch, window, *args, **kwargs) -> int:
    return recurrent_flops(projected, w_hh, batch, window)


@register_flop_formula(torch.ops.rtlib.gru_windows_backward)
def _(grad_out, projected, w_hh, b_hh, states, batch, window, *args, **kwargs) -> int:
    return 2 * recurrent_flops(projected, w_hh, batch, window)  # gradients of h and of W_hh


def gru_windows(projected: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, batch: int,
                window: int) -> torch.Tensor:
    """Last hidden state of every window: (N, d) from the padded time-major projection
    (R = N + (window-1)*batch rows, 3d wide), W_hh (3d, d) and b_hh (3d,)."""
    return _gru_windows(projected, w_hh, b_hh, batch, window)[0]
