"""Golden numbers: the fp32 outputs of every model on a tiny input, pinned on the CPU.

A refactor must not change what a model computes. Each model below is built from a fixed seed
(so its initialisation is pinned too) and run in eval mode on a fixed input; its output (the
first values, their sum and norm) and the gradient of a fixed function of it were recorded by
this file and are compared to 1e-6. A change that *means* to change them regenerates the file with ``RTLIB_UPDATE_GOLDEN=1 pytest
tests/test_golden_models.py`` and says why in its commit.
"""
from pathlib import Path

import pytest
import torch

from rtlib.models import (TCN, LanguageModel, PianoRollModel, RNNModel, RTransformer,
                          SequenceClassifier, Transformer)

GOLDEN = Path(__file__).parent / "golden" / "model_outputs.json"
D = 8
ATTENTION = dict(d_model=D, levels=2, heads=2, dropout=0.1)
BACKBONES = {
    **{f"rtransformer-{cell}-{impl}": (lambda cell=cell, impl=impl: RTransformer(
        **ATTENTION, n_local=2, window=3, cell=cell, local_rnn_impl=impl))
       for cell in ("gru", "lstm", "rnn") for impl in ("reference", "unfold", "batched", "fast")},
    "rtransformer-post-torch-explicit": lambda: RTransformer(**ATTENTION, n_local=1, window=4, norm="post",
                                                             layer_norm="torch", attention_impl="explicit"),
    **{f"transformer-{position}": (lambda position=position: Transformer(**ATTENTION, position=position,
                                                                         max_len=16))
       for position in ("sinusoidal", "learned", "none")},
    "transformer-post-explicit": lambda: Transformer(**ATTENTION, norm="post", attention_impl="explicit"),
    "tcn": lambda: TCN(input_size=D, channels=[D, 6, D], kernel_size=3, dropout=0.1),
    **{f"rnn-{cell}": (lambda cell=cell: RNNModel(input_size=D, hidden_size=D, num_layers=2, cell=cell,
                                                   dropout=0.1))
       for cell in ("rnn", "gru", "lstm")},
}
HEADS = ("classifier", "piano-roll", "language-model")

FP32_CPUS = dict(rel=1e-5, abs=1e-6)


def build(backbone: str, head: str) -> torch.nn.Module:
    torch.manual_seed(0)
    core = BACKBONES[backbone]()
    project = backbone.startswith(("rtransformer", "transformer"))
    if head == "classifier":
        return SequenceClassifier(core, 1 if project else D, 10, project_input=project)
    if head == "piano-roll":
        return PianoRollModel(core, 5 if project else D, project_input=project)
    return LanguageModel(core, vocab_size=11, emb_dropout=0.1, tied=True, init="normal", init_scale=0.05)


def example(backbone: str, head: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    if head == "language-model":
        return torch.randint(0, 11, (2, 7), generator=generator)
    project = backbone.startswith(("rtransformer", "transformer"))
    features = (1 if head == "classifier" else 5) if project else D
    if head == "piano-roll":
        return (torch.rand(2, 7, features, generator=generator) < 0.3).float()
    return torch.randn(2, 7, features, generator=generator)


def numbers(backbone: str, head: str) -> dict:
    model = build(backbone, head).eval()
    x = example(backbone, head)
    out = model(x)
    weights = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = out.detach().flatten()
    return dict(output_head=flat[:24].tolist(), output_sum=float(flat.sum()), output_norm=float(flat.norm()),
                grad_norm=float(torch.cat([g.flatten() for g in grads]).norm()),
                grad_sum=float(sum(g.sum() for g in grads)))


CASES = [(backbone, head) for backbone in BACKBONES for head in HEADS]


@pytest.mark.parametrize("backbone,head", CASES)
def test_model_computes_its_golden_outputs(golden, backbone, head):
    got = numbers(backbone, head)
    expected = golden(GOLDEN, f"{backbone}/{head}", got)
    if expected is None:
        return
    # fp32 kernels round differently across CPUs (a few ulps between AVX-512 machines with and
    # without AMX): FP32_CPUS is far below any change of the computation itself.
    assert got["output_head"] == pytest.approx(expected["output_head"], **FP32_CPUS)
    assert got["output_sum"] == pytest.approx(expected["output_sum"], rel=1e-5, abs=1e-5)
    assert got["output_norm"] == pytest.approx(expected["output_norm"], **FP32_CPUS)
    assert got["grad_norm"] == pytest.approx(expected["grad_norm"], **FP32_CPUS)
    assert got["grad_sum"] == pytest.approx(expected["grad_sum"], rel=1e-5, abs=1e-5)
