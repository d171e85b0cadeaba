"""The recurrent rows widened with exactly-zero hidden units (rtlib.padding) compute and train
as configured: same outputs and gradients (fp64), extra units zero after training steps, and
the engine keeps checkpoints and records in the configured shapes."""
from dataclasses import replace

import pytest
import torch

import rtlib.runtime as runtime
from rtlib.configs import run_config
from rtlib.models import TaskShape, build_model
from rtlib.padding import GATES, HiddenPadding, widened
from rtlib.run_folder import load_checkpoint
from rtlib.runtime import PADDED_WIDTH, Runtime, hidden_width
from rtlib.train import CheckpointEvery, train
from test_train import QUIET, Killed, KillAfter

SHAPES = {"mnist": TaskShape("classify", 1, 10), "nottingham": TaskShape("music", 88, 88),
          "ptb-char": TaskShape("lm", None, 50), "ptb-word": TaskShape("lm", None, 60)}


def small(task, model, hidden=13, dropout=0.0):
    """The row's paper config at a small hidden size, in fp64-friendly form (dropout off: the
    wider model draws other masks)."""
    cfg = run_config(task, model, "paper")
    head = cfg.head if cfg.head is None else replace(cfg.head, emb_dropout=0.0)
    return replace(cfg, backbone=replace(cfg.backbone, hidden_size=hidden, dropout=dropout), head=head)


def both(cfg, width, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg, SHAPES[cfg.task]).double()
    wide, padding = widened(model, cfg, SHAPES[cfg.task], width)
    return model, wide.double(), padding


def inputs(task, batch=3, length=7):
    generator = torch.Generator().manual_seed(1)
    shape = SHAPES[task]
    if shape.kind == "lm":
        return torch.randint(0, shape.out_features, (batch, length), generator=generator)
    return torch.rand(batch, length, shape.in_features, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("task", sorted(SHAPES))
@pytest.mark.parametrize("model", sorted(GATES))
def test_the_wider_model_gives_the_same_outputs_and_gradients(task, model):
    cfg = small(task, model)
    narrow, wide, padding = both(cfg, width=16)
    x = inputs(task)
    out_narrow, out_wide = narrow(x), wide(x)
    assert torch.allclose(out_narrow, out_wide, rtol=0, atol=1e-12)
    out_narrow.square().sum().backward()
    out_wide.square().sum().backward()
    narrow_grads = {name: p.grad for name, p in narrow.named_parameters()}
    for name, p in wide.named_parameters():
        real = padding.unpad_tensor(name, p.grad)
        assert torch.allclose(real, narrow_grads[name], rtol=0, atol=1e-12), name
        # the gradient outside the configured units is exactly zero
        assert torch.equal(p.grad, padding.pad_tensor(name, real)), name


def test_the_layout_of_every_recurrent_row_as_configured():
    """Where the widened units go in each configured row's tensors (gate blocks for the cells'
    stacked weights), checked on the real sizes of the rows the engine widens."""
    for (model, hidden), width in PADDED_WIDTH.items():
        for task in ("ptb-char", "ptb-word", "nottingham", "mnist"):
            cfg = run_config(task, model, "paper")
            if cfg.backbone.hidden_size != hidden:
                continue
            shape = TaskShape("lm", None, 50)
            narrow = build_model(cfg, shape)
            wide, padding = widened(narrow, cfg, shape, width)
            layers = cfg.backbone.num_layers
            gated = "gates" if GATES[model] > 1 else "units"
            assert padding.layout["embedding.weight"] == (None, "units")
            assert padding.layout["decoder.weight"] == (None, "units") and padding.layout["decoder.bias"] == (None,)
            for layer in range(layers):
                assert padding.layout[f"backbone.rnn.weight_ih_l{layer}"] == (gated, "units")
                assert padding.layout[f"backbone.rnn.weight_hh_l{layer}"] == (gated, "units")
                assert padding.layout[f"backbone.rnn.bias_hh_l{layer}"] == (gated,)
            # the real units keep their initial values; the others are zero
            state, wide_state = narrow.state_dict(), wide.state_dict()
            for key, tensor in wide_state.items():
                assert torch.equal(padding.unpad_tensor(key, tensor), state[key])
                assert torch.equal(tensor, padding.pad_tensor(key, state[key]))


def test_a_layout_that_is_not_units_or_gates_is_refused():
    cfg = small("ptb-char", "gru")
    narrow = build_model(cfg, SHAPES["ptb-char"])
    other = build_model(cfg, TaskShape("lm", None, 51))  # another vocabulary, not wider units
    with pytest.raises(ValueError, match="embedding.weight: size 50 vs 51 is neither 13 units"):
        HiddenPadding.between(narrow, other, 13, 16, 3)
    with pytest.raises(ValueError, match="width=8 is narrower than the hidden size 13"):
        widened(narrow, cfg, SHAPES["ptb-char"], 8)
    with pytest.raises(ValueError, match="only the recurrent rows"):
        widened(narrow, run_config("ptb-char", "tcn", "paper"), SHAPES["ptb-char"], 16)


@pytest.mark.parametrize("model,optimizer", [("gru", "sgd"), ("lstm", "adam"), ("rnn", "sgd")])
def test_training_steps_keep_the_extra_units_zero_and_the_rest_as_configured(model, optimizer):
    cfg = small("ptb-word", model)
    narrow, wide, padding = both(cfg, width=20)
    make = {"sgd": lambda params: torch.optim.SGD(params, lr=0.5),
            "adam": lambda params: torch.optim.Adam(params, lr=0.01)}[optimizer]
    optimizers = make(narrow.parameters()), make(wide.parameters())
    for step in range(4):
        x = inputs("ptb-word", length=5 + step)
        for net, opt in zip((narrow, wide), optimizers):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x).flatten(0, 1), x.roll(-1, 1).flatten()).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.25)
            opt.step()
    state, wide_state = narrow.state_dict(), wide.state_dict()
    for key, tensor in wide_state.items():
        assert torch.allclose(padding.unpad_tensor(key, tensor), state[key], rtol=0, atol=1e-10), key
        assert torch.equal(tensor, padding.pad_tensor(key, padding.unpad_tensor(key, tensor))), key
    names = [name for name, _ in wide.named_parameters()]
    saved = padding.unpad_optimizer(optimizers[1].state_dict(), names)
    restored = padding.pad_optimizer(saved, names)
    for index, values in optimizers[1].state_dict()["state"].items():
        for key, value in values.items():
            assert torch.equal(restored["state"][index][key], value)


def test_the_engine_widens_only_measured_rows_on_a_compiled_gpu_step_unless_asked():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert hidden_width("auto", "rnn", 1198, cuda, "step-graph") == 1200
    assert hidden_width("auto", "rnn", 1198, cuda, "none") is None  # the eager reference path
    assert hidden_width("auto", "rnn", 1198, cpu, "none") is None
    assert hidden_width("on", "rnn", 1198, cpu, "none") == 1200
    assert hidden_width("off", "rnn", 1198, cuda, "step-graph") is None
    assert hidden_width("auto", "lstm", 700, cuda, "step-graph") is None  # 704 was slower
    assert hidden_width("auto", "rtransformer", None, cuda, "step-graph") is None
    with pytest.raises(ValueError, match=r"pad_hidden='yes' is not one of \['auto', 'on', 'off'\]"):
        hidden_width("yes", "rnn", 1198, cuda, "step-graph")


def test_a_widened_run_records_and_checkpoints_the_configured_model_and_resumes_without_widening(
        real_data, tmp_path, monkeypatch):
    cfg = run_config("ptb-char", "gru", "smoke", epochs=2, max_steps=4)
    cfg = replace(cfg, backbone=replace(cfg.backbone, dropout=0.0), head=replace(cfg.head, emb_dropout=0.0))
    hidden = cfg.backbone.hidden_size
    monkeypatch.setitem(runtime.PADDED_WIDTH, ("gru", hidden), hidden + 5)
    plain = train(cfg, tmp_path / "plain", Runtime(pad_hidden="off"), data_dir=real_data, **QUIET)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "wide", Runtime(pad_hidden="on"), data_dir=real_data,
              callbacks=[CheckpointEvery(2), KillAfter(5)], **QUIET)
    saved = load_checkpoint(tmp_path / "wide" / "checkpoint.pt")
    reference = load_checkpoint(tmp_path / "plain" / "checkpoint.pt")
    assert {key: value.shape for key, value in saved["model"].items()} == \
        {key: value.shape for key, value in reference["model"].items()}
    resumed = train(cfg, tmp_path / "wide", Runtime(pad_hidden="off"), data_dir=real_data, resume=True, **QUIET)
    assert resumed["num_parameters"] == plain["num_parameters"]
    assert [session.get("hidden_width") for session in resumed["sessions"]] == [hidden + 5, None]
    for ours, theirs in zip(resumed["curve"], plain["curve"], strict=True):
        for key in ("train_loss", "valid_loss", "test_loss"):  # without dropout: equal but for rounding
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key
    widened_record = train(cfg, tmp_path / "wide2", Runtime(pad_hidden="on"), data_dir=real_data, **QUIET)
    assert widened_record["engine"]["hidden_width"] == hidden + 5
    assert any(line.startswith(f"width: {hidden + 5} hidden units") for line in widened_record["deviations"])
    assert widened_record["num_parameters"] == plain["num_parameters"]
