"""Models: LocalRNN paths agree, every backbone is causal, parameter counts match the release."""
import pytest
import torch
from torch import nn

from rtlib.models import (TCN, LanguageModel, LocalRNN, PianoRollModel, RNNModel, RTransformer,
                          SequenceClassifier, Transformer)
from rtlib.models.layers import CausalSelfAttention, ReleasedLayerNorm

CELLS = ["gru", "lstm", "rnn"]


def naive_local_rnn(module: LocalRNN, x: torch.Tensor) -> torch.Tensor:
    """Per-position Python loop: run the module's RNN on each zero-padded window separately."""
    batch, length, d = x.shape
    padded = torch.cat([x.new_zeros(batch, module.window - 1, d), x], dim=1)
    outputs = []
    for t in range(length):
        out, _ = module.rnn(padded[:, t:t + module.window])
        outputs.append(out[:, -1])
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("window", [1, 4])
def test_local_rnn_paths_match_naive_loop_forward_and_gradients(cell, window):
    torch.manual_seed(0)
    reference = LocalRNN(6, window, cell, impl="reference")
    x = torch.randn(2, 9, 6)
    upstream = torch.randn_like(x)

    def grads(module, fn):
        inp = x.clone().requires_grad_()
        out = fn(inp)
        params = list(module.rnn.parameters())
        # window=1 never multiplies by W_hh: its gradient is a true zero, not missing
        return out, torch.autograd.grad((out * upstream).sum(), [inp, *params],
                                        allow_unused=True, materialize_grads=True)

    naive_out, naive_grads = grads(reference, lambda inp: naive_local_rnn(reference, inp))
    for impl in ["reference", "unfold", "fast"]:
        module = LocalRNN(6, window, cell, impl=impl)
        module.load_state_dict(reference.state_dict())
        out, module_grads = grads(module, module)
        assert out.shape == x.shape
        torch.testing.assert_close(out, naive_out, rtol=1e-5, atol=1e-5)
        for got, want in zip(module_grads, naive_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_local_rnn_window_limits_what_a_position_sees():
    torch.manual_seed(0)
    module = LocalRNN(4, 3, "gru")
    x = torch.randn(1, 10, 4)
    y = x.clone()
    y[0, 2] += 1.0  # inside the windows of positions 2, 3, 4 only
    changed = (module(x) - module(y)).abs().amax(-1)[0] > 1e-7
    assert changed.tolist() == [False, False, True, True, True] + [False] * 5


def test_local_rnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="'conv'.*gru"):
        LocalRNN(4, 3, "conv")
    with pytest.raises(ValueError, match="impl='cuda'"):
        LocalRNN(4, 3, impl="cuda")
    with pytest.raises(ValueError, match="window=0"):
        LocalRNN(4, 0)


def small_backbones() -> dict[str, nn.Module]:
    return {
        "rtransformer": RTransformer(d_model=8, levels=2, heads=2, n_local=2, window=3),
        "rtransformer-post-lstm": RTransformer(d_model=8, levels=2, heads=2, n_local=1, window=3,
                                               cell="lstm", norm="post", layer_norm="torch"),
        "transformer-sinusoidal": Transformer(d_model=8, levels=2, heads=2),
        "transformer-learned": Transformer(d_model=8, levels=2, heads=2, position="learned", max_len=32),
        "transformer-none": Transformer(d_model=8, levels=2, heads=2, position="none"),
        "tcn": TCN(8, [8, 8, 8], kernel_size=3, dropout=0.1),
        "gru": RNNModel(8, 8, 2, "gru"),
        "lstm": RNNModel(8, 8, 2, "lstm"),
        "rnn": RNNModel(8, 8, 1, "rnn"),
    }


@pytest.mark.parametrize("name", list(small_backbones()))
@pytest.mark.parametrize("t", [0, 5, 11])
def test_every_backbone_is_causal(name, t):
    torch.manual_seed(0)
    backbone = small_backbones()[name].eval()
    x = torch.randn(2, 12, 8)
    y = x.clone()
    y[:, t] += torch.randn(2, 8)
    with torch.no_grad():
        out_x, out_y = backbone(x), backbone(y)
    assert torch.equal(out_x[:, :t], out_y[:, :t]), f"{name}: output before {t} changed"
    assert not torch.allclose(out_x[:, t], out_y[:, t]), f"{name}: position {t} ignores its input"


# (model, head) -> parameters the released code's forward uses, from its scripts' settings.
RELEASED_USED_PARAMETERS = {
    "table1": (lambda: SequenceClassifier(RTransformer(d_model=32, levels=8, heads=2, n_local=2,
                                                       window=7, cell="gru"), 1, 10), 204_426),
    "table2": (lambda: PianoRollModel(RTransformer(d_model=160, levels=3, heads=4, n_local=1,
                                                   window=6, cell="gru"), 88), 1_420_888),
    "table3": (lambda: LanguageModel(RTransformer(d_model=512, levels=3, heads=8, n_local=1,
                                                  window=7, cell="gru"), 49), 14_213_169),
    "table4": (lambda: LanguageModel(RTransformer(d_model=128, levels=3, heads=8, n_local=1,
                                                  window=9, cell="lstm"), 10_000), 2_281_872),
}


@pytest.mark.parametrize("table", list(RELEASED_USED_PARAMETERS))
def test_rtransformer_parameter_counts_equal_released_used_parameters(table):
    build, expected = RELEASED_USED_PARAMETERS[table]
    assert sum(p.numel() for p in build().parameters()) == expected


def test_post_norm_is_post_norm_and_pre_norm_is_not():
    torch.manual_seed(0)
    x = 3 + 5 * torch.randn(2, 7, 8)
    outputs = {}
    for norm in ["pre", "post"]:
        torch.manual_seed(1)
        model = RTransformer(d_model=8, levels=1, heads=2, n_local=1, window=3, norm=norm).eval()
        with torch.no_grad():
            outputs[norm] = model(x)
    # post-norm ends in LayerNorm (gain 1, bias 0 at init): each position is standardized
    post = outputs["post"]
    torch.testing.assert_close(post.mean(-1), torch.zeros(2, 7), atol=1e-5, rtol=0)
    torch.testing.assert_close(post.std(-1), torch.ones(2, 7), atol=1e-4, rtol=0)
    # pre-norm keeps the residual stream: the input's offset of 3 survives
    assert outputs["pre"].mean() > 1.5


def test_post_norm_block_computes_layer_norm_of_residual_sum():
    torch.manual_seed(0)
    model = RTransformer(d_model=8, levels=1, heads=2, n_local=1, window=3, norm="post").eval()
    block = model.blocks[0]
    x = torch.randn(2, 5, 8)
    local_rnn, attention, feed_forward = block.local_rnns[0], block.attention, block.feed_forward
    h = local_rnn.norm(x + local_rnn.layer(x))
    h = attention.norm(h + attention.layer(h))
    h = feed_forward.norm(h + feed_forward.layer(h))
    with torch.no_grad():
        torch.testing.assert_close(model(x), h)


def test_released_layer_norm_uses_unbiased_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    expected = (x - 2.5) / (torch.tensor(1.6666666).sqrt() + 1e-6)
    torch.testing.assert_close(ReleasedLayerNorm(4)(x), expected)


def test_sdpa_attention_equals_released_masked_softmax():
    torch.manual_seed(0)
    sdpa = CausalSelfAttention(16, 4, dropout=0.0, impl="sdpa")
    explicit = CausalSelfAttention(16, 4, dropout=0.0, impl="explicit")
    explicit.load_state_dict(sdpa.state_dict())
    x = torch.randn(3, 10, 16)
    torch.testing.assert_close(sdpa(x), explicit(x), rtol=1e-5, atol=1e-5)
    weights = sdpa.weights(x)
    assert weights.shape == (3, 4, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 10))
    assert weights.triu(1).abs().max() < 1e-6


def test_transformer_positions_make_order_visible():
    torch.manual_seed(0)
    x = torch.randn(1, 6, 8)
    swapped = x[:, [1, 0, 2, 3, 4, 5]]
    for position, order_matters in [("none", False), ("sinusoidal", True)]:
        torch.manual_seed(1)
        model = Transformer(d_model=8, levels=1, heads=2, position=position).eval()
        with torch.no_grad():
            differs = not torch.allclose(model(x)[:, -1], model(swapped)[:, -1], atol=1e-6)
        assert differs == order_matters, position


@pytest.mark.parametrize("name", list(small_backbones()))
def test_every_backbone_with_every_head_shapes_and_dtypes(name):
    torch.manual_seed(0)
    project = name.startswith(("rtransformer", "transformer"))
    backbone = small_backbones()[name]
    classifier = SequenceClassifier(backbone, 8 if not project else 1, 10, project_input=project)
    pixels = torch.randn(2, 12, 8 if not project else 1)
    assert classifier(pixels).shape == (2, 10)
    backbone = small_backbones()[name]
    keys = 8 if not project else 88
    music = PianoRollModel(backbone, keys, project_input=project)
    assert music(torch.rand(2, 12, keys).round()).shape == (2, 12, keys)
    lm = LanguageModel(small_backbones()[name], vocab_size=30)
    logits = lm(torch.randint(0, 30, (2, 12)))
    assert logits.shape == (2, 12, 30) and logits.dtype == torch.float32
    assert lm.decoder.weight is lm.embedding.weight


def test_heads_reject_mismatched_sizes():
    with pytest.raises(ValueError, match="project_input=True"):
        SequenceClassifier(TCN(8, [8], 3, 0.0), 1, 10, project_input=False)
    with pytest.raises(ValueError, match="tied=True"):
        LanguageModel(TCN(8, [16], 3, 0.0), 30)
    with pytest.raises(ValueError, match="position='rope'"):
        Transformer(position="rope")


def test_fp32_attention_uses_the_exact_math_kernel_unless_tf32_is_allowed():
    from torch.nn.attention import SDPBackend
    from rtlib.models.layers import SDPA_BACKENDS, sdpa_backends
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert sdpa_backends(torch.float32) == [SDPBackend.MATH]
        assert sdpa_backends(torch.bfloat16) == SDPA_BACKENDS
        torch.set_float32_matmul_precision("high")
        assert sdpa_backends(torch.float32) == SDPA_BACKENDS
    finally:
        torch.set_float32_matmul_precision(previous)


def test_tcn_convolutions_start_from_pytorchs_default_init_as_the_tcn_suite_really_does():
    """The suite's normal_(0, 0.01) on a weight-normalised conv's weight is overwritten by the
    weight-norm hook; only the (plain) 1x1 downsample keeps N(0, 0.01)."""
    from torch.nn.utils.parametrizations import weight_norm

    from rtlib.models.tcn import CausalConv1d, TemporalBlock
    torch.manual_seed(0)
    ours = CausalConv1d(6, 8, 3, dilation=2)
    torch.manual_seed(0)
    default = weight_norm(torch.nn.Conv1d(6, 8, 3, dilation=2))
    assert torch.equal(ours.conv.weight, default.weight) and torch.equal(ours.conv.bias, default.bias)
    block = TemporalBlock(64, 256, 3, 1, 0.0)
    assert abs(float(block.downsample.weight.detach().std()) - 0.01) < 0.001
    assert float(block.net[0].conv.weight.detach().std()) > 0.02  # kaiming-uniform's scale, not 0.01


def test_sinusoidal_positions_are_built_on_the_inputs_device():
    from rtlib.models.transformer import sinusoidal_positions
    table = sinusoidal_positions(5, 4, torch.device("meta"))
    assert table.device.type == "meta" and table.shape == (5, 4)
    assert torch.equal(sinusoidal_positions(7, 6), sinusoidal_positions(7, 6, "cpu"))
