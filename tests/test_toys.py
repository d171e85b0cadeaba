"""Toy tasks, toy models, permutation checks, timings and the intuition chapter's figures."""
import json
import warnings

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from rtlib import bench_results, plots, toys  # noqa: E402
from rtlib.models import RTransformer, Transformer  # noqa: E402


def tokens_of(x):
    return x.argmax(-1)


def test_order_task_label_is_the_order_of_a_and_b_inside_the_span():
    task = toys.order_task(length=20, span=4, num_noise=6)
    x, y = task.sample(500, torch.Generator().manual_seed(0))
    tokens = tokens_of(x)
    a, b, query = 6, 7, 8
    assert x.shape == (500, 20, task.vocab) and set(y.tolist()) == {0, 1}
    assert (tokens[:, -1] == query).all()
    for row, label in zip(tokens, y):
        pos_a, pos_b = (row == a).nonzero().flatten(), (row == b).nonzero().flatten()
        assert len(pos_a) == len(pos_b) == 1
        assert 20 - 1 - 4 <= min(pos_a, pos_b) and max(pos_a, pos_b) <= 20 - 2  # inside the span
        assert int(label) == int(pos_a < pos_b)
    # both classes hold the same multiset of event tokens: only the order differs
    assert abs(float(y.float().mean()) - 0.5) < 0.1


def test_far_order_task_puts_both_events_beyond_the_windows_reach():
    task = toys.far_order_task(length=32, min_distance=14, num_noise=6)
    x, y = task.sample(400, torch.Generator().manual_seed(0))
    tokens = tokens_of(x)
    for row, label in zip(tokens, y):
        pos_a, pos_b = int((row == 6).nonzero()), int((row == 7).nonzero())
        assert max(pos_a, pos_b) < 32 - 1 - 14  # more than 14 steps before the query
        assert int(label) == int(pos_a < pos_b)
    # the LocalRNN stack of the chapter (2 layers, M=5) sees 9 inputs from the end: neither event
    assert toys.receptive_field("local-rnn", 2, 5, 32) < 14 and toys.receptive_field("conv", 2, 5, 32) < 14


def test_steps_to_and_the_outcomes_say_who_solved_it_and_when():
    assert toys.steps_to([(10, 0.5), (20, 0.96), (30, 0.99)]) == 20
    assert toys.steps_to([(10, 0.5)]) is None
    results = pd.DataFrame([dict(model=model, levels=2, window=5, accuracy=a, chance=0.5, receptive_field=9,
                                 parameters=100, curve=[(10, 0.5), (20, a)])
                            for model, a in [("conv", 0.97), ("conv", 0.99), ("rtransformer", 0.98)]])
    conv = toys.outcomes(results).set_index("model").loc["conv"]
    assert (conv["seeds"], conv["hits"], conv["mean_step"], conv["outcome"]) == (2, 2, 20, "solved")
    table = toys.summary_table(results)
    assert table.index.name == "model"  # the model names, not a bare 0, 1, 2 ...
    assert table.loc["causal conv (TCN block)", "test accuracy (%)"] == "98.0 ± 1.4"
    assert list(toys.outcomes(results.assign(accuracy=[0.5, 0.5, 0.99]))["outcome"]) == ["chance", "solved"]


def test_a_window_sweep_table_gives_no_window_to_a_model_without_one():
    rows = [dict(model=model, levels=1, window=window, accuracy=0.9, chance=0.25, receptive_field=32,
                 parameters=100, curve=[(10, 0.9)]) for model, window in
            [("rtransformer", 1), ("rtransformer", 2), ("transformer-none", 5)]]
    table = toys.summary_table(pd.DataFrame(rows))
    assert table.index.names == ["model", "window M"]
    assert list(table.index) == [("R-Transformer (1 layer)", 1), ("R-Transformer (1 layer)", 2),
                                 ("Transformer, no positions (1 layer)", "–")]  # not the 5 it was passed
    assert toys.uses_window("conv") and toys.uses_window("local-rnn") and not toys.uses_window("transformer-none")


def toy_runs(runs):
    """Rows as `toys.compare` returns them from (model, levels, final accuracy, step reaching 95% or None)."""
    return pd.DataFrame([dict(model=model, levels=levels, window=5, accuracy=a, chance=0.5, receptive_field=9,
                              parameters=100, curve=[(10, 0.5)] + ([(hit, 0.96)] if hit else []) + [(90, a)])
                         for model, levels, a, hit in runs])


def test_describe_says_who_solves_a_toy_and_who_got_there_sooner_on_every_seed():
    results = toy_runs([("conv", 2, 0.99, 20), ("conv", 2, 0.99, 30), ("rtransformer", 2, 0.98, 40),
                        ("rtransformer", 2, 0.99, 50), ("transformer-none", 2, 0.99, 30),
                        ("transformer-none", 2, 0.99, 70), ("transformer-none", 1, 0.5, None),
                        ("transformer-none", 1, 0.51, None)])
    rows = toys.outcomes(results).set_index(["model", "levels"])
    assert rows.loc[("conv", 2), "hit_steps"] == [20, 30] and rows.loc[("transformer-none", 1), "hits"] == 0
    conv, rt, none = (rows.loc[(model, 2)] for model in ("conv", "rtransformer", "transformer-none"))
    assert toys.sooner(conv, rt) and not toys.sooner(rt, conv) and not toys.sooner(conv, none)
    assert toys.verdict(results) == ("every 2-layer model solves it; "
                                     "Transformer, no positions (1 layer) stays at chance")
    text = toys.describe(results)
    assert text.startswith("**Every 2-layer model solves it;")
    assert "2 of 2 seeds reached 95%, at steps 20 and 30." in text
    assert text.endswith("Sooner to 95% on every seed: causal conv (TCN block) before R-Transformer.")
    duel = toys.versus(results, "rtransformer", ["conv", "transformer-none"])
    assert duel["lead"] == pytest.approx(-0.5) and duel["before"] == [] and duel["behind"] == ["causal conv (TCN block)"]
    assert duel["pace"] == ("causal conv (TCN block) reached 95% before it on every seed; Transformer, no positions "
                            "got there later on average (step 50 against 45) but not on every seed")
    duel = toys.versus(results, "transformer-none", ["rtransformer"])
    assert duel["pace"] == "R-Transformer got there sooner on average (step 45 against 50) but not on every seed"


def test_verdict_names_who_solves_it_when_not_every_model_does():
    results = toy_runs([("local-rnn", 2, 0.5, None), ("conv", 2, 0.7, None), ("rtransformer", 2, 0.99, 20)])
    assert toys.verdict(results) == ("R-Transformer solves it; causal conv (TCN block) gets only part of it; "
                                     "LocalRNN alone stays at chance")
    assert toys.describe(results).endswith("No model reached 95% sooner than another on every seed.")


def test_scoreboard_puts_every_model_on_every_toy():
    first = toy_runs([("conv", 2, 0.99, 20), ("conv", 2, 0.9, None), ("rtransformer", 2, 0.5, None)])
    second = toy_runs([("rtransformer", 2, 0.97, 40), ("transformer-none", 1, 0.5, None)])
    board = toys.scoreboard({"(a)": first, "(b)": second})
    assert list(board.index) == ["causal conv (TCN block)", "R-Transformer", "Transformer, no positions (1 layer)"]
    assert board.loc["causal conv (TCN block)", ("(a)", "step to 95%")] == "20 (1 of 2)"
    assert board.loc["R-Transformer", ("(a)", "step to 95%")] == "–"
    assert board.loc["R-Transformer", ("(b)", "accuracy (%)")] == "97.0"
    assert board.loc["causal conv (TCN block)", ("(b)", "accuracy (%)")] == "not run"


def test_eval_schedule_is_dense_early_even_on_a_log_scale_and_ends_at_the_last_step():
    schedule = toys.eval_schedule(300)
    assert schedule[:6] == [5, 10, 15, 20, 25, 30] and schedule[-1] == 300
    gaps = [b - a for a, b in zip(schedule, schedule[1:-1])]
    assert all(gap > 0 for gap in gaps) and gaps == sorted(gaps)   # never denser later
    assert len(schedule) < 300 // 10                                 # fewer reads than every 10 steps
    assert toys.eval_schedule(20) == [5, 10, 15, 20] and toys.eval_schedule(3) == [3]
    record = toys.train_toy(toys.order_task(length=8, span=3), "conv", steps=6, num_test=20, eval_at=[1, 2, 5])
    assert [step for step, _ in record["curve"]] == [1, 2, 5, 6]


def test_retrieval_task_label_is_the_value_right_after_the_far_marker():
    task = toys.retrieval_task(length=32, min_distance=12, num_values=4, num_noise=4)
    x, y = task.sample(300, torch.Generator().manual_seed(1))
    tokens = tokens_of(x)
    marker, query = 8, 9
    for row, label in zip(tokens, y):
        (position,) = (row == marker).nonzero().flatten().tolist()
        assert row[position + 1] == 4 + label                    # value token follows the marker
        assert 32 - 1 - (position + 1) >= 12                     # at least min_distance back
        assert row[-1] == query
    assert task.chance == 0.25


def test_render_and_decode_give_one_character_per_token():
    task = toys.order_task(length=10, span=3)
    x, _ = task.sample(1, torch.Generator().manual_seed(0))
    text = toys.render(task, x[0])
    assert len(text) == 10 and text.endswith("?") and "A" in text and "B" in text


@pytest.mark.parametrize("seen,expected", [(1, 0.5), (2, 0.75), (3, 11 / 12), (4, 1.0), (9, 1.0)])
def test_order_ceiling_counts_what_the_window_sees(seen, expected):
    assert toys.order_ceiling(4, seen) == pytest.approx(expected)


@pytest.mark.parametrize("kind", toys.TOY_MODELS)
def test_toy_models_classify_and_their_receptive_field_is_exact(kind):
    torch.manual_seed(0)
    model = toys.make_toy_model(kind, vocab=9, num_classes=3, d_model=8, levels=2, heads=2, window=3).eval()
    x = torch.randn(8, 16, 9)
    with torch.no_grad():
        assert model(x).shape == (8, 3)
        field = toys.receptive_field(kind, levels=2, window=3, length=16)
        inside, outside = x.clone(), x.clone()
        inside[:, 16 - field] += 10 * torch.randn(8, 9)  # the oldest input the last position sees
        if field < 16:
            outside[:, 16 - field - 1] += 1.0   # one step further back
            assert torch.equal(model(outside), model(x)), kind
        assert (model(inside) - model(x)).abs().max() > 0, kind


def test_make_toy_model_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="'mlp'"):
        toys.make_toy_model("mlp", 4, 2)


def test_local_rnn_learns_the_order_task_when_its_window_covers_the_span():
    record = toys.train_toy(toys.order_task(span=4), "local-rnn", steps=150, num_test=400,
                            eval_every=50, window=5, levels=1)
    assert record["receptive_field"] == 5
    assert record["accuracy"] > 0.9
    assert [step for step, _ in record["curve"]] == [50, 100, 150]


def test_compare_and_window_sweep_return_one_row_per_run():
    task = toys.order_task(length=12, span=3)
    frame = toys.window_sweep(task, ["local-rnn", "conv"], [1, 3], steps=3, num_test=20, levels=1)
    assert len(frame) == 4 and "net" not in frame.columns
    assert set(frame["window"]) == {1, 3} and (frame["chance"] == 0.5).all()


def test_one_position_free_attention_layer_is_blind_to_the_order_of_its_prefix():
    torch.manual_seed(0)
    x = torch.randn(3, 10, 8)
    small = dict(d_model=8, heads=2, dropout=0.0)
    assert toys.last_output_change(Transformer(levels=1, position="none", **small), x) < 1e-5
    assert toys.last_output_change(RTransformer(levels=1, n_local=1, window=3, **small), x) > 1e-3
    assert toys.last_output_change(Transformer(levels=1, **small), x) > 1e-3


def test_attention_without_its_mask_is_permutation_equivariant():
    torch.manual_seed(0)
    layer = Transformer(d_model=8, levels=1, heads=2, position="none").blocks[0].attention.layer
    x, order = torch.randn(2, 9, 8), torch.randperm(9)
    with torch.no_grad():
        torch.testing.assert_close(toys.bidirectional_attention(layer, x)[:, order],
                                   toys.bidirectional_attention(layer, x[:, order]), atol=1e-5, rtol=1e-5)


def test_permute_prefix_keeps_the_last_position_and_the_multiset():
    x = torch.arange(10.0).view(1, 10, 1)
    shuffled = toys.permute_prefix(x, torch.Generator().manual_seed(0))
    assert shuffled[0, -1, 0] == 9 and sorted(shuffled.flatten().tolist()) == list(range(10))


def test_the_outcome_follows_the_numbers():
    assert toys.outcome(0.99, 0.5) == "solved"
    assert toys.outcome(0.52, 0.5) == "chance"
    assert toys.outcome(0.8, 0.5) == "partial"


def test_time_layers_measures_every_layer_at_every_length_with_its_spread():
    timings = toys.time_layers(lengths=(8, 16), d=8, window=3, batch=2, repeats=2, min_run_time=0.01)
    assert len(timings) == 6 and timings["layer"].nunique() == 3
    assert (timings["ms"] > 0).all() and (timings["ms_max"] >= timings["ms"]).all()
    assert (timings["spread"] >= 1).all() and (timings["threads"] == 1).all()
    steps = toys.sequential_steps(100, 7).set_index("layer")["sequential_steps"]
    assert steps.tolist() == [100, 7, 1, 1]


def test_layer_costs_count_sequential_steps_and_flops():
    d, window, batch, length = 16, 4, 2, 32
    costs = toys.layer_costs(length, d=d, window=window, batch=batch).set_index("layer")
    assert costs["sequential_steps"].tolist() == [length, window, 1]
    positions = batch * length
    gru, local, conv = costs["flops"]
    assert gru == positions * 2 * 2 * d * 3 * d  # input and hidden projections, 3 gates
    assert conv == positions * 2 * window * d * d
    # the LocalRNN projects every input (and window - 1 padding positions) once, then takes
    # window - 1 hidden steps from a zero state for every position
    assert local == 2 * d * 3 * d * (batch * (length + window - 1) + positions * (window - 1))
    assert costs["flops_vs_gru"].iloc[0] == 1 and costs["flops_per_position"].iloc[2] == 2 * window * d * d


def test_load_gpu_bench_reads_the_bench_format_and_tolerates_none(tmp_path):
    assert bench_results.load_gpu_bench(tmp_path).empty
    report = dict(device="NVIDIA H100", tables=[dict(table=1, task="mnist", variants=dict(
        reference=dict(median_ms=30.0, peak_memory_bytes=2**30),
        fast=dict(median_ms=10.0, speedup_vs_reference=3.0, peak_memory_bytes=2**29),
        compiled=dict(error="failed"))), dict(table=1, task="mnist", model="tcn", variants=dict(
        reference=dict(median_ms=14.0, peak_memory_bytes=2**28)))])
    (tmp_path / "h100.json").write_text(json.dumps(report))
    bound = dict(device="NVIDIA H100", tables={"3": dict(
        table_task="ptb-char", reference_ms=34.0, variant_ms=5.8, without_local_rnn_ms=2.7,
        local_rnn_matmuls_ms=1.15, bound_ms=3.85, speedup_vs_reference=5.9,
        bound_speedup_vs_reference=8.8, mfu=0.18, bound_mfu=0.28)})
    (tmp_path / "bound_h100.json").write_text(json.dumps(bound))
    bench = bench_results.load_gpu_bench(tmp_path).set_index(["file", "variant"])
    assert bench.loc[("h100.json", "fast"), "speedup"] == 3.0
    assert bench.loc[("h100.json", "reference"), "peak_memory_mib"] == 1024
    assert len(bench) == 2  # the failed variant, the TCN's row and the bound's file are left out
    assert set(bench["model"]) == {"rtransformer"}  # an entry without a model is the R-Transformer's
    every_model = bench_results.load_gpu_bench(tmp_path, model=None).set_index(["model", "variant"])
    assert every_model.loc[("tcn", "reference"), "ms_per_step"] == 14.0 and len(every_model) == 3
    bounds = bench_results.load_local_rnn_bounds(tmp_path).set_index("table")
    assert bounds.loc[3, "bound_ms"] == 3.85 and bounds.loc[3, "task"] == "ptb-char"
    assert bench_results.load_local_rnn_bounds(tmp_path / "h100.json").empty  # no bound_*.json there


def test_intuition_figures_draw():
    fig = plots.receptive_fields(length=8, window=3, t=5)
    assert len(fig.axes) == 4
    results = pd.DataFrame([dict(model="local-rnn", levels=1, accuracy=0.9, chance=0.5, window=3,
                                 receptive_field=3),
                            dict(model="conv", levels=1, accuracy=0.6, chance=0.5, window=3,
                                 receptive_field=3)])
    assert plots.plot_toy_accuracy(results).get_xlabel() == "test accuracy (%)"
    ax = plots.plot_window_sweep(results, ceiling=lambda seen: toys.order_ceiling(4, seen))
    assert ax.get_ylabel() == "test accuracy (%)"
    timings = pd.DataFrame([dict(layer="a", length=8, ms=1.0), dict(layer="a", length=16, ms=2.0)])
    assert plots.plot_timings(timings).get_xlabel() == "sequence length L"
    seeds = pd.DataFrame([dict(model="conv", levels=2, accuracy=a, chance=0.5, curve=[(10, 0.5), (20, a)])
                          for a in (0.7, 0.9)])
    ax = plots.plot_toy_curves(seeds)
    assert ax.get_lines()[0].get_ydata().tolist() == pytest.approx([50.0, 80.0])
    matplotlib.pyplot.close("all")


def test_a_toy_figure_keeps_its_key_below_both_panels_and_lays_out_without_warnings():
    names = ["local-rnn", "conv", "transformer-none", "transformer-sinusoidal", "rtransformer"]
    runs = [(model, 2, a, 20) for model in names for a in (0.94, 1.0, 1.0)]  # a mean + std above 100%
    results = toy_runs(runs + [("transformer-none", 1, 0.5, None)] * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "constrained_layout not applied"
        fig = plots.plot_toy_results(results, title="(a) which of A and B comes first?")
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (key,) = fig.legends
    assert key.get_window_extent(renderer).y1 <= min(ax.get_tightbbox(renderer).y0 for ax in fig.axes) + 1
    left, right = fig.axes
    assert min(left.get_position().width, right.get_position().width) > 0.2  # neither panel collapsed
    styles = {line.get_label(): line.get_linestyle() for line in right.get_lines()}
    assert styles["Transformer, no positions (1 layer)"] == "--" and styles["Transformer, no positions"] == "-"
    assert max(max(patch.get_paths()[0].vertices[:, 1]) for patch in right.collections) <= 100  # bands stop at 100%
    assert len(key.get_texts()) == 9  # six models, 95%, one seed, chance
    matplotlib.pyplot.close("all")


def test_bench_tables_read_as_words_and_never_show_nan():
    frame = pd.DataFrame({"bound_ms": [1.0], "speedup": [float("nan")]})
    assert bench_results.readable(frame).to_dict("records") == [{"bound (ms)": 1.0, "speed-up": "–"}]


def test_load_music_epochs_reads_the_epoch_timings(tmp_path):
    assert bench_results.load_music_epochs(tmp_path).empty
    epoch = {"reference": dict(epoch_s=10.0, steps=694, speedup_vs_reference=1.0),
             "fast, 8 tunes a step": dict(epoch_s=0.5, steps=87, speedup_vs_reference=20.0),
             "speedup_per_epoch": 20.0}
    (tmp_path / "gpu.json").write_text(json.dumps(dict(device="GPU", tables=[
        dict(table=1, variants={}), dict(table=2, variants={}, epoch=epoch)])))
    (tmp_path / "equivalence.json").write_text(json.dumps(dict(tables={"1": dict(grad_rel_error=1e-6)})))
    epochs = bench_results.load_music_epochs(tmp_path).set_index("setup")
    assert epochs.loc["fast, 8 tunes a step", "speedup"] == 20.0
    assert len(epochs) == 2 and epochs.loc["reference", "steps"] == 694
    # an older file records the times only (and its speed-up beside them): the ratio is computed
    older = {"reference": dict(epoch_s=10.8, steps=694), "fast, 8 tunes a step": dict(epoch_s=6.0, steps=87),
             "speedup_per_epoch": 1.8}
    (tmp_path / "gpu.json").write_text(json.dumps(dict(device="GPU", tables=[dict(table=2, epoch=older)])))
    epochs = bench_results.load_music_epochs(tmp_path).set_index("setup")
    assert epochs["speedup"].tolist() == [1.0, pytest.approx(1.8)]


def test_the_speedup_sentence_names_the_variant_of_the_largest_and_the_eager_path_alone():
    bench = pd.DataFrame([dict(device=device, table=table, variant=variant, speedup=speedup)
                          for device, table, variant, speedup in [
                              ("H100", 1, "reference", 1.0), ("H100", 1, "fast", 2.92),
                              ("H100", 1, "fast+compile+step-graph", 21.87), ("H100", 2, "fast", 0.87),
                              ("H100", 2, "fast+compile+step-graph", 19.1), ("H200", 1, "fast", 2.8)]])
    text = bench_results.speedup_sentence(bench)
    assert text.startswith("up to 21.9x faster than the released algorithm (H100, Table 1) with "
                           "`fast+compile+step-graph`, which adds")
    assert "the `fast` path alone, run eagerly, gave from 0.87x (Table 2) to 2.92x (Table 1) on the same GPU" in text
    assert "below 1x: slower" in text and "2.80x" not in text  # the other GPU's runs are not mixed in
    assert bench_results.speedup_sentence(bench.iloc[:0]) == ""
    only_eager = bench_results.speedup_sentence(bench[bench["variant"] != "fast+compile+step-graph"])
    assert only_eager == "up to 2.9x faster than the released algorithm (H100, Table 1) with `fast`"
