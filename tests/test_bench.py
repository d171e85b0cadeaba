"""The fast LocalRNN path's arithmetic and the benchmark's machinery (no timing assertions)."""
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import rtlib.bench as bench
from rtlib.bench import (GATES, REFERENCE_VARIANT, StepRunner, bench_table, check_equivalence, local_rnn_bound,
                         local_rnn_matmuls, model_variants, remove_local_rnns, step_flops, time_steps,
                         variant_runner)
from rtlib.configs import run_config, with_variant
from rtlib.models.local_rnn import LocalRNN


def counted_flops(call) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        call()
    return counter.get_total_flops()


def forward_flops(module: LocalRNN, x: torch.Tensor) -> int:
    with torch.no_grad():
        return counted_flops(lambda: module(x))


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
    runner = StepRunner(cfg, torch.device("cpu"), "fp32", fused=False)
    timing = time_steps(runner, warmup=1, repeats=2)
    assert timing["median_ms"] > 0 and timing["repeats"] == 2
    assert timing["tokens_per_s"] == pytest.approx(runner.tokens_per_step / (timing["median_ms"] / 1e3))
    assert step_flops(runner) > 0


@pytest.mark.parametrize("task", ["mnist", "ptb-char"])
def test_bound_matmuls_are_the_fast_local_rnns_matmuls(task):
    cfg = with_variant(run_config(task, "rtransformer", "smoke"), "window=4")
    backbone, batch, length = cfg.backbone, 3, 10
    matmuls, flops = local_rnn_matmuls(cfg, batch, length, torch.device("cpu"), torch.float32)
    assert counted_flops(matmuls) == flops
    local_rnn = LocalRNN(backbone.d_model, backbone.window, backbone.cell, "fast")
    x = torch.randn(batch, length, backbone.d_model, requires_grad=True)
    one_training_step = counted_flops(lambda: local_rnn(x).sum().backward())
    assert one_training_step * backbone.levels * backbone.n_local == flops


def test_bound_runs_without_local_rnns_on_cpu(real_data, monkeypatch):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    cfg = run_config("ptb-word", "rtransformer", "smoke")
    runner = StepRunner(cfg, torch.device("cpu"), "fp32", fused=False)
    remove_local_rnns(runner.model)
    assert not any(isinstance(m, LocalRNN) for m in runner.model.modules())
    assert torch.isfinite(runner.step())
    bound = local_rnn_bound(cfg, torch.device("cpu"), warmup=1, repeats=2, variant="fast")
    assert bound["bound_ms"] == pytest.approx(bound["without_local_rnn_ms"] + bound["local_rnn_matmuls_ms"])
    assert bound["bound_speedup_vs_reference"] == pytest.approx(bound["reference_ms"] / bound["bound_ms"])
    assert bound["flops_per_step"] > bound["local_rnn_matmul_flops"] > 0


@pytest.mark.parametrize("task", ["mnist", "nottingham", "ptb-word"])
def test_fast_path_matches_released_algorithm_in_a_training_step(real_data, monkeypatch, task):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    cfg = with_variant(run_config(task, "rtransformer", "smoke"), "window=3")
    errors = check_equivalence(cfg, torch.device("cpu"))
    assert errors["loss_rel_error"] < 1e-5
    assert errors["grad_rel_error"] < 1e-4, errors
    assert max(errors["reference_grad_rel_error_vs_float64"], errors["fast_grad_rel_error_vs_float64"]) < 1e-4
    assert REFERENCE_VARIANT.startswith("local_rnn_impl=reference")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused cell kernels run on CUDA only")
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_cuda_cells_match_reference(cell, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # the reference runs in cuDNN
    torch.manual_seed(0)
    reference = LocalRNN(16, 4, cell, "reference").cuda()
    fast = LocalRNN(16, 4, cell, "fast").cuda()
    fast.load_state_dict(reference.state_dict())
    x = torch.randn(3, 20, 16, device="cuda", requires_grad=True)
    torch.testing.assert_close(fast(x), reference(x), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("task", ["mnist", "nottingham", "ptb-word"])
def test_graphed_whole_step_trains_like_eager_steps(task):
    cfg = with_variant(run_config(task, "rtransformer", "smoke"), "dropout=0" + (",emb_dropout=0" if task == "ptb-word" else ""))
    device = torch.device("cuda")
    eager, graphed = (StepRunner(cfg, device, "fp32", mode, fused=True) for mode in ("none", "step-graph"))
    graphed.model.load_state_dict(eager.model.state_dict())
    batches = [eager.batch, tuple(t.flip(0) for t in eager.batch)]
    for _ in range(3):
        for batch in batches:
            torch.testing.assert_close(graphed.step(batch), eager.step(batch), rtol=1e-4, atol=1e-5)
    assert len(graphed.graphs) == 1 and graphed.graphs.captures == 1
    for runner in (eager, graphed):  # an annealed lr is captured again
        for group in runner.optimizer.param_groups:
            group["lr"] /= 2
    torch.testing.assert_close(graphed.step(batches[0]), eager.step(batches[0]), rtol=1e-4, atol=1e-5)
    assert graphed.graphs.captures == 2
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)


def test_engine_modes_times_and_checks_each_mode_through_the_engine(real_data):
    from rtlib.bench import dropout_masks_vary, engine_modes
    result = engine_modes(4, "rtransformer", torch.device("cpu"), steps=2, data_dir=real_data,
                          modes=("none",), timing_profile="smoke")
    none = result["modes"]["none"]
    assert none["works"] and none["ms_per_step"] > 0 and none["dropout_masks_vary"] is True
    assert none["max_rel_loss_difference_vs_eager"] == 0.0 and result["fastest_correct"] == "none"
    assert result["precision"] == run_config("ptb-word", "rtransformer", "smoke").train.precision == "fp32"
    other = engine_modes(4, "rtransformer", torch.device("cpu"), steps=2, data_dir=real_data,
                         modes=("none",), timing_profile="smoke", precision="bf16")
    assert other["precision"] == "bf16" and other["modes"]["none"]["works"]
    batched = engine_modes(4, "rtransformer", torch.device("cpu"), steps=2, data_dir=real_data, modes=("none",),
                           timing_profile="smoke", model_variant="local_rnn_impl=batched")
    assert batched["model_variant"] == "local_rnn_impl=batched" and batched["modes"]["none"]["works"]
    no_dropout = run_config("mnist", "rnn", "smoke")  # the seq-MNIST RNN rows have no dropout
    assert dropout_masks_vary(no_dropout, "none", torch.device("cpu"), real_data) is None


def test_engine_modes_cli_tries_only_the_modes_asked_for_and_rejects_others(monkeypatch, tmp_path, capsys):
    import rtlib.bench as bench
    asked = []

    def engine_modes(table, model, device, steps, modes, precision, model_variant, pad_hidden):
        asked.append((table, model, modes, precision) + ((model_variant,) if model_variant else ())
                     + ((pad_hidden,) if pad_hidden != "auto" else ()))
        return dict(modes={mode: dict(works=True, ms_per_step=1.0) for mode in modes}, fastest_correct=modes[0])
    monkeypatch.setattr(bench, "engine_modes", engine_modes)
    out = tmp_path / "engine_modes.json"
    assert bench.main(["--device", "cpu", "--tables", "1", "--engine-modes", "tcn", "--modes", "none",
                       "step-graph", "--out", str(out)]) == 0
    assert bench.main(["--device", "cpu", "--tables", "1", "--engine-modes", "rtransformer", "--modes", "none",
                       "--precision", "fp32", "--out", str(out)]) == 0
    assert asked == [(1, "tcn", ("none", "step-graph"), None), (1, "rtransformer", ("none",), "fp32")]
    assert out.exists()
    folder = tmp_path / "out"  # the device tool's $OUT: the JSON goes in it under its default name
    folder.mkdir()
    assert bench.main(["--device", "cpu", "--tables", "1", "--engine-modes", "tcn", "--modes", "none",
                       "--out", str(folder)]) == 0
    assert [path.name.startswith("engine_modes_") for path in folder.iterdir()] == [True]
    # a model setting changed for timing (the LocalRNN's matmul steps in fp32): its own JSON
    assert bench.main(["--device", "cpu", "--tables", "1", "--engine-modes", "rtransformer", "--modes", "step-graph",
                       "--precision", "fp32", "--model-variant", "local_rnn_impl=batched", "--out", str(folder)]) == 0
    assert asked[-1] == (1, "rtransformer", ("step-graph",), "fp32", "local_rnn_impl=batched")
    assert sum(path.name.startswith("engine_modes_local_rnn_impl-batched_") for path in folder.iterdir()) == 1
    # a widened row at its configured width (rtlib.padding): its own JSON too
    assert bench.main(["--device", "cpu", "--tables", "3", "--engine-modes", "rnn", "--modes", "step-graph",
                       "--pad-hidden", "off", "--out", str(folder)]) == 0
    assert asked[-1] == (3, "rnn", ("step-graph",), None, "off")
    assert sum(path.name.startswith("engine_modes_pad-hidden-off_") for path in folder.iterdir()) == 1
    for argv, named in [(["--engine-modes", "tcn", "--modes", "fastest"], "fastest"),
                        (["--engine-modes", "rtransformer", "--model-variant", "local_rnn_impl=nope"], "'nope'"),
                        (["--model-variant", "local_rnn_impl=batched"], "only with --engine-modes or --profile"),
                        (["--pad-hidden", "off"], "--pad-hidden off times only with --engine-modes")]:
        with pytest.raises(SystemExit) as exit_:
            bench.main(["--device", "cpu", "--tables", "1", *argv])
        assert exit_.value.code == 2 and named in capsys.readouterr().err
    assert len(asked) == 5  # the bad calls timed nothing


@pytest.fixture
def built_runners(monkeypatch):
    """(model, variant, precision, engine mode, fused optimizer) of every StepRunner the bench builds."""
    built = []

    class Recorded(StepRunner):
        def __init__(self, cfg, device, precision, mode="none", fused=True, **kwargs):
            built.append((cfg.model, cfg.variant, precision, mode, fused))
            super().__init__(cfg, device, precision, mode, fused, **kwargs)
    monkeypatch.setattr(bench, "StepRunner", Recorded)
    return built


def no_equivalence_check(cfg, device):
    raise AssertionError(f"{cfg.model} has one implementation: nothing to check it against")


def test_a_baselines_reference_is_its_model_in_fp32_eager_unfused_without_an_equivalence_check(
        real_data, monkeypatch, built_runners):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    monkeypatch.setattr(bench, "check_equivalence", no_equivalence_check)
    result = bench_table(2, torch.device("cpu"), warmup=1, repeats=2, variants=["reference", "fast"],
                         log=lambda message: None, model="tcn", profile="smoke")
    assert result["model"] == "tcn" and "equivalence_fp32" not in result and "no_reference" not in result
    reference, fast = result["variants"]["reference"], result["variants"]["fast"]
    assert reference["median_ms"] > 0 and fast["speedup_vs_reference"] == pytest.approx(
        reference["median_ms"] / fast["median_ms"])
    assert built_runners == [("tcn", "", "fp32", "none", False), ("tcn", "", "fp32", "none", True)]


def test_fast_variants_train_in_the_rows_precision_and_the_released_variant_only_for_the_rtransformer(
        real_data, monkeypatch, built_runners):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    for model in ("lstm", "gru", "rtransformer"):  # Table 2's LSTM trains in fp32, its GRU in bf16 autocast
        cfg = run_config("nottingham", model, "paper")
        for name in ("reference", "fast+step-graph"):
            variant_runner(cfg, name, torch.device("cpu"))
    assert built_runners == [("lstm", "", "fp32", "none", False), ("lstm", "", "fp32", "step-graph", True),
                             ("gru", "", "fp32", "none", False), ("gru", "", "auto", "step-graph", True),
                             ("rtransformer", REFERENCE_VARIANT, "fp32", "none", False),
                             ("rtransformer", "", "auto", "step-graph", True)]
    ablation = variant_runner(cfg, "fast+step-graph", torch.device("cpu"), precision="fp32")  # --precision fp32
    assert built_runners[-1] == ("rtransformer", "", "fp32", "step-graph", True) and ablation.precision == "fp32"


def test_the_transformer_has_no_reference_and_fastest_is_each_models_engine_mode(real_data, monkeypatch):
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    result = bench_table(2, torch.device("cpu"), warmup=1, repeats=1, variants=["reference", "fast"],
                         log=lambda message: None, model="transformer", profile="smoke")
    assert list(result["variants"]) == ["fast"] and result["no_reference"] == "no released Transformer baseline"
    assert "speedup_vs_reference" not in result["variants"]["fast"] and "equivalence_fp32" not in result
    with pytest.raises(ValueError, match="no released Transformer baseline"):
        variant_runner(run_config("nottingham", "transformer", "smoke"), "reference", torch.device("cpu"))
    assert model_variants("transformer", ["reference", "fastest"]) == ["fast+compile+step-graph"]
    assert model_variants("lstm", ["reference", "fastest", "fast+step-graph"]) == ["reference", "fast+step-graph"]
    assert model_variants("rtransformer", ["fastest", "reference"]) == ["fast+compile+step-graph", "reference"]


def test_recurrent_baselines_flops_count_the_rnns_matmuls(real_data, monkeypatch):
    """On a CPU oneDNN runs fp32 LSTMs as one op (on a GPU, cuDNN every RNN) that the counter does
    not see: only the head's FLOPs would be counted."""
    monkeypatch.setenv("RTLIB_DATA_DIR", str(real_data))
    cfg = run_config("nottingham", "lstm", "smoke")
    runner = StepRunner(cfg, torch.device("cpu"), "fp32", fused=False)
    batch, length = runner.batch[0].shape[:2]
    hidden, layers, inputs = cfg.backbone.hidden_size, cfg.backbone.num_layers, [88] + [cfg.backbone.hidden_size] * 3
    forward = sum(2 * batch * length * 4 * hidden * (inputs[layer] + hidden) for layer in range(layers))
    assert step_flops(runner) >= 2 * forward  # backward: at least the weights' gradients, as many again
    assert torch.backends.mkldnn.enabled and torch.backends.cudnn.enabled  # switched back on


def test_bench_cli_times_the_models_asked_for_default_the_rtransformer(monkeypatch, tmp_path):
    asked = []

    def bench_table(table, device, warmup, repeats, variants, model):
        asked.append((table, model, variants))
        return dict(table=table, model=model, variants={})
    monkeypatch.setattr(bench, "bench_table", bench_table)
    monkeypatch.setattr(bench, "bench_music_epoch", lambda device, setups: dict(timed=True))
    fetched = []
    monkeypatch.setattr(bench, "fetch_tasks", fetched.append)
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--tables", "2", "--variants", "reference", "--out", str(out)]) == 0
    assert asked == [(2, "rtransformer", ["reference"])] and fetched == [["nottingham"]]
    assert bench.main(["--device", "cpu", "--tables", "1", "2", "--models", "tcn", "rtransformer", "--variants",
                       "reference", "fastest", "--music-epoch", "--out", str(out)]) == 0
    assert asked[1:] == [(table, model, ["reference", "fastest"]) for table in (1, 2) for model in ("tcn", "rtransformer")]
    written = json.loads(out.read_text())["tables"]
    assert [(entry["table"], entry["model"], "epoch" in entry) for entry in written] == [
        (1, "tcn", False), (1, "rtransformer", False), (2, "tcn", False), (2, "rtransformer", True)]


def test_bench_stops_before_any_row_when_a_table_has_no_data(monkeypatch, tmp_path):
    from rtlib.data.fetch import DataNotFoundError

    asked = []
    monkeypatch.setattr(bench, "bench_table", lambda *args, **kwargs: asked.append(args))

    def no_mnist(tasks):
        raise DataNotFoundError(f"cannot find data file mnist/train-images-idx3-ubyte (asked for {tasks})")
    monkeypatch.setattr(bench, "fetch_tasks", no_mnist)
    out = tmp_path / "bench.json"
    with pytest.raises(DataNotFoundError, match=r"\['mnist', 'ptb-char'\]"):
        bench.main(["--device", "cpu", "--tables", "3", "1", "--models", "tcn", "--out", str(out)])
    assert not asked and not out.exists()  # batch ad timed Tables 3-4 and wrote errors for 1-2


def test_engine_modes_names_the_width_a_widened_row_ran_at(real_data, monkeypatch):
    """The engine widens the PTB-char GRU on a GPU (rtlib.padding); here on the CPU, `on` stands
    for that, at the smoke model's size."""
    import rtlib.runtime as runtime
    from rtlib.bench import engine_modes
    hidden = run_config("ptb-char", "gru", "smoke").backbone.hidden_size
    monkeypatch.setitem(runtime.PADDED_WIDTH, ("gru", hidden), hidden + 3)
    wide = engine_modes(3, "gru", torch.device("cpu"), steps=2, data_dir=real_data, modes=("none",),
                        timing_profile="smoke", pad_hidden="on")
    assert wide["hidden_width"] == hidden + 3 and wide["pad_hidden"] == "on" and wide["modes"]["none"]["works"]
    narrow = engine_modes(3, "gru", torch.device("cpu"), steps=2, data_dir=real_data, modes=("none",),
                          timing_profile="smoke", pad_hidden="off")
    assert "hidden_width" not in narrow
