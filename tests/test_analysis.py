"""Attention maps, attention distances, window saliency, analyze_run and the analysis figures."""
import json

import matplotlib

matplotlib.use("Agg")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from rtlib import analysis, plots, results, tables, tasks  # noqa: E402
from rtlib.run_folder import DIGEST_KEY, record_digest  # noqa: E402
from rtlib.configs import ABLATIONS, run_config  # noqa: E402
from rtlib.results import load_records  # noqa: E402
from rtlib.models import LocalRNN, RTransformer, SequenceClassifier, Transformer  # noqa: E402
from rtlib.train import train  # noqa: E402

QUIET = dict(log=lambda message: None)


@pytest.mark.parametrize("backbone", [
    RTransformer(d_model=8, levels=2, heads=2, n_local=2, window=3),
    Transformer(d_model=8, levels=3, heads=4, position="learned", max_len=16)])
def test_attention_maps_are_causal_distributions_one_per_layer(backbone):
    torch.manual_seed(0)
    x = torch.randn(2, 12, 8)
    maps = analysis.attention_maps(backbone, x)
    levels, heads = backbone.config.levels, backbone.config.heads
    assert maps.shape == (levels, 2, heads, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(levels, 2, heads, 12))
    assert (maps.triu(1) == 0).all()


def test_attention_maps_are_what_the_first_layer_computes_on_its_normalized_input():
    torch.manual_seed(0)
    backbone = Transformer(d_model=8, levels=2, heads=2, position="none").eval()
    x = torch.randn(1, 7, 8)
    sublayer = backbone.blocks[0].attention
    with torch.no_grad():
        expected = sublayer.layer.weights(sublayer.norm(x))
    torch.testing.assert_close(analysis.attention_maps(backbone, x)[0], expected)


def test_attention_maps_refuse_models_without_attention():
    with pytest.raises(ValueError, match="no CausalSelfAttention"):
        analysis.attention_maps(nn.Linear(4, 4), torch.randn(1, 3, 4))


def test_mean_attention_distance_of_known_maps():
    length = 9
    self_only = torch.eye(length).expand(1, 1, 2, length, length)
    uniform = torch.tril(torch.ones(length, length))
    uniform = (uniform / uniform.sum(-1, keepdim=True)).expand(1, 1, 2, length, length)
    assert analysis.mean_attention_distance(self_only).tolist() == [[0.0, 0.0]]
    # row i spreads evenly over 0..i: mean distance i / 2, averaged over i: (L - 1) / 4
    torch.testing.assert_close(analysis.mean_attention_distance(uniform),
                               torch.full((1, 2), (length - 1) / 4))


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_window_saliency_has_one_share_per_offset(method):
    torch.manual_seed(0)
    local = LocalRNN(6, 4, "gru")
    saliency = analysis.window_saliency_of(local, torch.randn(2, 10, 6), method)
    assert saliency.shape == (4,) and (saliency >= 0).all()
    assert float(saliency.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_window_saliency_of_a_memoryless_rnn_is_all_on_the_current_input(method):
    torch.manual_seed(0)
    local = LocalRNN(5, 3, "rnn")
    with torch.no_grad():
        local.rnn.weight_hh_l0.zero_()  # h_t = tanh(W x_t + b): nothing older reaches the output
    saliency = analysis.window_saliency_of(local, torch.randn(2, 8, 5), method)
    torch.testing.assert_close(saliency, torch.tensor([1.0, 0.0, 0.0]))


def test_window_saliency_covers_every_local_rnn_of_a_model():
    torch.manual_seed(0)
    model = SequenceClassifier(RTransformer(d_model=8, levels=3, heads=2, n_local=2, window=5), 1, 10)
    saliency = analysis.window_saliency(model, torch.randn(1, 20, 1))
    assert saliency.shape == (6, 5)
    with pytest.raises(ValueError, match="method"):
        analysis.window_saliency_of(LocalRNN(4, 2), torch.randn(1, 5, 4), "magic")


def test_normalized_entropy_is_one_for_uniform_heads_and_zero_for_one_hot_ones():
    length = 6
    uniform = torch.tril(torch.ones(length, length))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    self_only = torch.eye(length)
    maps = torch.stack([uniform, self_only])[None]  # (layers=1, heads=2, L, L)
    torch.testing.assert_close(analysis.normalized_entropy(maps), torch.tensor([[1.0, 0.0]]))
    last_rows = torch.full((1, 1, 1, 784), 1 / 784)  # seq-MNIST keeps the last query's row only
    torch.testing.assert_close(analysis.normalized_entropy(last_rows), torch.tensor([[1.0]]))
    for on_another_device in (maps, last_rows):  # stands in for CUDA: every tensor follows the maps
        assert analysis.normalized_entropy(on_another_device.to("meta")).device.type == "meta"


def test_committed_analyses_say_where_their_weights_come_from_and_how_uniform_each_head_is():
    items = analysis.load_analyses()
    heads = analysis.head_uniformity(items)
    assert len(heads) == sum(item["layers"] * item["heads"] for item in items)
    assert heads["entropy"].between(0, 1.0001).all() and (heads["ratio"] > 0).all()
    assert "heads are near uniform" in analysis.uniformity_sentence(heads)
    table = analysis.provenance(items)
    assert not (table["epoch"] == "not recorded").any() and set(table["test examples"]) <= {1, 4}
    assert (table["with attention maps"] <= table["test examples"]).all()
    assert set(table["task"]) <= set(results.TASK_NAMES.values())  # 'seq-MNIST', not 'mnist'
    assert not table["note"].str.contains("test nll|test bpc").any()  # metric ids of older JSONs, named
    assert set(heads["profile"]) <= {"paper", "fast"}


def test_a_provenance_note_names_its_metric_in_words_once():
    id_note = "a second run of this seed, made for its weights (results/repeats/); its test nll 2.832"
    assert analysis.readable_note(id_note, "nll").endswith("its test NLL 2.832")
    worded = "a second run of this seed, made for its weights (results/repeats/); its test accuracy in % 98.46"
    assert analysis.readable_note(worded, "accuracy").endswith("its test accuracy 98.46%")  # not "in % in %"
    for note, metric in [(id_note, "nll"), (worded, "accuracy")]:
        once = analysis.readable_note(note, metric)
        assert analysis.readable_note(once, metric) == once
    assert analysis.readable_note("weights brought back in bf16", "bpc") == "weights brought back in bf16"
    assert analysis.metric_value("bpc", "1.411") == "bits per character 1.411"
    notes = analysis.provenance(analysis.load_analyses())["note"]
    assert not notes.str.contains("in % in %|in % [0-9]", regex=True).any()


def _fake(task, model, profile, distances, lengths=(9,)):
    """An analysis dict with one (1 layer x 2 heads) distance per example."""
    first, *more = [dict(description=f"example {i}", length=n, mean_distance=[d], entropy=[[0.95, 0.5]])
                    for i, (n, d) in enumerate(zip(lengths, distances))]
    return dict(task=task, model=model, profile=profile, layers=1, heads=2, length=first["length"],
                example=dict(description=first["description"]), mean_distance=first["mean_distance"],
                entropy=first["entropy"], more_examples=more)


def test_coverage_names_every_pair_by_profile_and_the_missing_ones():
    items = [_fake("ptb-word", "rtransformer", "paper", [[1, 2]]), _fake("mnist", "rtransformer", "fast", [[1, 2]])]
    text = analysis.coverage(items)
    assert "Analysed at the paper profile: Table 4 R-Transformer." in text
    assert "Analysed only at a shorter profile: Table 1 R-Transformer (fast)." in text
    assert "Not analysed at all: Table 1 Transformer, Table 2 R-Transformer" in text
    assert "Table 4 Transformer" in text.split("Not analysed at all:")[1]


def test_distance_comparison_pairs_the_same_examples_and_counts_them():
    rt = _fake("ptb-word", "rtransformer", "paper", [[4, 6], [2, 2], [5, 5]], lengths=(9, 9, 9))
    tr = _fake("ptb-word", "transformer", "paper", [[1, 1], [3, 3]], lengths=(9, 9))
    table = analysis.distance_comparison([rt, tr])
    assert table["example"].tolist() == ["example 0", "example 1"]  # example 2: no Transformer twin
    assert table["rtransformer"].tolist() == [5.0, 2.0] and table["transformer"].tolist() == [1.0, 3.0]
    sentence = analysis.comparison_sentence(table)
    assert "PTB-word (paper profile), 1 of 2 examples" in sentence and "+1.5 steps" in sentence
    assert "No task has both" in analysis.comparison_sentence(analysis.distance_comparison([rt]))


def test_uniformity_sentence_says_whether_most_heads_are_uniform_and_where_not():
    items = [_fake("ptb-word", "rtransformer", "paper", [[1, 2], [3, 4]], lengths=(9, 13))]
    heads = analysis.head_uniformity(items)
    assert heads["uniform"].tolist() == [2.5, 2.5]  # mean of (9 - 1) / 4 and (13 - 1) / 4
    assert heads["distance"].tolist() == [2.0, 3.0] and heads["examples"].eq(2).all()
    sentence = analysis.uniformity_sentence(heads)
    assert sentence.startswith("**Half of the heads are near uniform: 1 of 2**")
    assert "Half or fewer are near uniform in: PTB-word R-Transformer (paper)" in sentence
    assert analysis._share_word(3, 4) == "Most" and analysis._share_word(1, 4) == "Fewer than half"


def _smoke_run(task, model, folder, data_dir):
    train(run_config(task, model, "smoke", epochs=1), folder, data_dir=data_dir, **QUIET)
    return folder


def test_analyze_run_on_a_smoke_mnist_run_without_best_checkpoint(real_data, tmp_path):
    run = _smoke_run("mnist", "rtransformer", tmp_path / "run", real_data)
    (run / "best.pt").unlink(missing_ok=True)  # weights then come from checkpoint.pt's "model"
    out = tmp_path / "analysis.json"
    result = analysis.analyze_run(run, out, real_data)
    assert out.stat().st_size < 1_000_000
    saved = json.loads(out.read_text())
    assert saved["run_id"] == result["run_id"] == "mnist_rtransformer_smoke_lr0.001_seed1111"
    assert saved["layers"] == 2 and saved["heads"] == 2 and saved["window"] == 7
    assert len(saved["last_row"][0][0]) == 784
    assert sum(saved["last_row"][1][1]) == pytest.approx(1.0, abs=1e-2)
    assert len(saved["saliency"]["gradient"]) == 2 and len(saved["saliency"]["gradient"][0]) == 7
    assert len(saved["example"]["pixels"]) == 784 and saved["example"]["label"] == 7
    assert saved["test_metric"] is not None
    assert saved["provenance"]["weights"].startswith("checkpoint.pt") and saved["provenance"]["epoch"] is None


def test_analyze_run_on_several_examples_keeps_each_ones_distances(real_data, tmp_path):
    run = _smoke_run("ptb-word", "transformer", tmp_path / "run", real_data)
    result = analysis.analyze_run(run, tmp_path / "a.json", real_data, examples=3)
    assert len(result["more_examples"]) == 2 and result["provenance"]["weights"] == "best.pt"
    assert [len(e["example"]["tokens"]) for e in analysis.examples_with_maps(result)] == \
        [e["length"] for e in analysis.analysed_examples(result)]  # every example keeps its maps
    further = result["more_examples"][0]
    assert len(further["maps"]) == result["layers"] and len(further["maps"][0]) == 1  # head 1 only
    assert analysis.examples_with_maps(result, head=1) == [result]
    assert "note" not in result["provenance"]
    again = run.rename(run.with_name(run.name + ".again"))  # a second run of the seed, for its weights
    repeat = analysis.analyze_run(again, tmp_path / "b.json", real_data)
    assert repeat["provenance"]["note"].startswith("a second run of this seed, made for its weights")
    assert "; its test perplexity " in repeat["provenance"]["note"]
    record = {**json.loads((again / "record.json").read_text()), "status": "diverged", "test_metric": None}
    (again / "record.json").write_text(json.dumps({**record, DIGEST_KEY: record_digest(record)}))
    unscored = analysis.analyze_run(again, tmp_path / "c.json", real_data)
    assert unscored["provenance"]["note"].endswith("its test metric: none (diverged)")
    descriptions = {result["example"]["description"]} | {e["description"] for e in result["more_examples"]}
    assert len(descriptions) == 3
    assert analysis.head_uniformity([result])["examples"].eq(3).all()


@pytest.mark.parametrize("task,model", [("ptb-word", "rtransformer"), ("nottingham", "transformer")])
def test_analyze_run_on_sequence_tasks_stores_full_lower_triangular_maps(real_data, tmp_path, task, model):
    run = _smoke_run(task, model, tmp_path / "run", real_data)
    result = analysis.analyze_run(run, tmp_path / "a.json", real_data)
    rows = result["maps"][0][0]
    assert len(rows) == result["length"] <= analysis.MAX_TOKENS
    assert [len(row) for row in rows] == list(range(1, len(rows) + 1))
    assert all(sum(row) == pytest.approx(1.0, abs=1e-2) for row in rows)
    assert ("saliency" in result) == (model == "rtransformer")
    if task == "ptb-word":
        assert result["example"]["tokens"][-1] == "<eos>"


def test_only_the_first_map_examples_keep_their_maps_and_a_page_says_when_fewer_are_held(real_data, tmp_path):
    run = _smoke_run("mnist", "transformer", tmp_path / "run", real_data)
    result = analysis.analyze_run(run, tmp_path / "a.json", real_data, examples=4, map_examples=2)
    held = analysis.examples_with_maps(result)
    assert [example["example"]["description"] for example in held] == ["test image 1", "test image 2"]
    assert len(held[1]["last_row"][0]) == result["heads"]  # a digit's rows are small: every head
    assert held[1]["example"]["label"] == 2 and len(held[1]["example"]["pixels"]) == 784
    assert "last_row" not in result["more_examples"][1]
    assert analysis.maps_shortfall([result], wanted=2) == ""
    note = analysis.maps_shortfall([result], wanted=3)
    assert note.startswith("Every analysis here predates") and "the maps of 2 test examples" in note
    old = dict(_fake("ptb-word", "rtransformer", "paper", [[1, 2], [3, 4]], lengths=(9, 9)), maps=[[[[1.0]]]])
    assert analysis.maps_shortfall([old, result], wanted=2).startswith(
        "The analysis of PTB-word R-Transformer predates keeping several examples' maps: it holds the maps "
        "of 1 test example, so the attention figures below show 1 test example for this model")
    older = dict(old, task="nottingham")
    assert analysis.maps_shortfall([old, older, result], wanted=2).startswith(
        "The analyses of PTB-word R-Transformer and Nottingham R-Transformer predate")


def test_the_window_ablations_say_which_tables_have_records(tmp_path):
    from test_results import write_record

    empty = analysis.window_ablation_runs(load_records(tmp_path))
    planned = {a.table for a in ABLATIONS if a.variant.startswith("window=")}
    assert set(empty["table"]) == planned and not any(empty["recorded"])
    assert analysis.window_ablation_sentence(empty).endswith("so there is nothing to plot yet.")
    released = run_config("nottingham", "rtransformer", "paper").backbone.window
    write_record(tmp_path, variant="window=1", test=4.2)
    runs = analysis.window_ablation_runs(load_records(tmp_path)).set_index("table")
    assert runs.loc[2, "recorded"] == [1] and runs.loc[2, "planned"] == [1, 3, 2 * released]
    sentence = analysis.window_ablation_sentence(runs.reset_index())
    assert f"Table 2 (Nottingham: M = 1, 3 and {2 * released} around the released {released})" in sentence
    assert f"Table 2's M = 1 (M = 3 and {2 * released} not run)" in sentence
    assert "none of Table 4's (not run), so only Table 2 can be plotted." in sentence
    assert "at seed 1111" in sentence


def test_analyze_command_line_writes_the_json(real_data, tmp_path, capsys):
    run = _smoke_run("ptb-char", "rtransformer", tmp_path / "run", real_data)
    assert analysis.main(["--run", str(run), "--out", str(tmp_path / "x.json"),
                          "--data-dir", str(real_data)]) == 0
    assert json.loads((tmp_path / "x.json").read_text())["task"] == "ptb-char"
    assert "KiB" in capsys.readouterr().out


def test_pick_analyses_prefers_paper_then_fast_and_skips_ablations():
    items = [dict(task="mnist", model="rtransformer", profile=profile, variant=variant, tag=tag)
             for profile, variant, tag in [("smoke", "", 1), ("paper", "window=3", 2),
                                           ("fast", "", 3), ("paper", "", 4)]]
    assert analysis.pick_analyses(items)["mnist", "rtransformer"]["tag"] == 4
    assert analysis.pick_analyses(items[:3])["mnist", "rtransformer"]["tag"] == 3


def _maps_of(examples: int, **fields) -> dict:
    """An analysis whose first `examples` examples keep their (one-head, one-query) maps."""
    kept = [dict(example=[i], maps=[[[[1.0]]]]) for i in range(examples)]
    return dict(fields, **kept[0], more_examples=kept[1:] + [dict(example=[99])])


def test_of_one_profile_the_analysis_with_more_examples_maps_is_shown_and_counts_as_full(tmp_path):
    old = _maps_of(1, task="ptb-char", model="rtransformer", profile="paper", tag="seed 1113, before kept_maps")
    new = _maps_of(analysis.MAP_EXAMPLES, task="ptb-char", model="rtransformer", profile="paper", tag="seed 1111")
    assert analysis.pick_analyses([old, new])["ptb-char", "rtransformer"]["tag"] == "seed 1111"
    assert analysis.pick_analyses([new, old])["ptb-char", "rtransformer"]["tag"] == "seed 1111"
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert not analysis.analysed_in_full("ptb-char", "rtransformer", tmp_path)  # gpu_paper_batch.sh analyses again
    (tmp_path / "fast.json").write_text(json.dumps(dict(new, profile="fast")))
    (tmp_path / "ablation.json").write_text(json.dumps(dict(new, variant="window=3")))
    assert not analysis.analysed_in_full("ptb-char", "rtransformer", tmp_path)
    (tmp_path / "new.json").write_text(json.dumps(new))
    assert analysis.analysed_in_full("ptb-char", "rtransformer", tmp_path)
    assert not analysis.analysed_in_full("ptb-char", "transformer", tmp_path)


def test_a_batch_analyses_runs_at_the_rows_lr_only_and_only_until_one_is_analysed_in_full(tmp_path):
    analyses = tmp_path / "analyses"
    analyses.mkdir()

    def run(name, **fields):
        folder = tmp_path / name
        folder.mkdir()
        record = dict(task="ptb-word", model="rtransformer", profile="paper", variant="", lr=2.0) | fields
        (folder / "record.json").write_text(json.dumps(record))
        return folder

    row = run("row")
    assert analysis.wants_analysis(row, analyses)
    assert not analysis.wants_analysis(run("grid_point", lr=1.0), analyses)  # not the model of the cell
    assert not analysis.wants_analysis(run("ablation", variant="window=3"), analyses)
    assert not analysis.wants_analysis(run("fast", profile="fast"), analyses)
    assert not analysis.wants_analysis(run("baseline", model="tcn", lr=4.0), analyses)
    (analyses / "done.json").write_text(json.dumps(
        _maps_of(analysis.MAP_EXAMPLES, task="ptb-word", model="rtransformer", profile="paper")))
    assert not analysis.wants_analysis(row, analyses)


def test_parameter_counts_breakdown_and_released_dead_weights(real_data):
    model = tables.build_paper_model("mnist", "rtransformer", data_dir=real_data)
    parts = tables.parameter_breakdown(model)
    assert sum(parts.values()) == sum(p.numel() for p in model.parameters()) == 204_426
    assert parts["LocalRNN"] == 16 * 3 * 2 * (32 * 32 + 32)  # 16 GRUs: 3 gates x (W_ih, W_hh, b_ih, b_hh)
    d = 32  # final LayerNorm + final FFN + one Linear(d, d) per LocalRNN (8 levels x 2)
    expected = 2 * d + (8 * d * d + 5 * d) + 16 * (d * d + d)
    assert tables.released_dead_parameters(run_config("mnist", "rtransformer", "paper").backbone) == expected
    word = tables.build_paper_model("ptb-word", "rtransformer", data_dir=real_data)
    assert tables.parameter_breakdown(word)["input/output"] == 10_000 * 128 + 10_000  # tied embedding + bias
    sentence = tables.breakdown_sentence(pd.DataFrame({"Table 1": pd.Series(parts)}))
    assert "the input and output layers hold 0.2% of the model" in sentence  # 394 of 204,426, not "0%"
    assert [tables.percent(x) for x in (0.0, 0.0019, 0.25)] == ["0%", "0.2%", "25%"]


def test_config_table_lists_every_model_with_its_settings():
    table = tables.config_table("ptb-char").set_index("model")
    assert len(table) == 6
    assert table.loc["R-Transformer", "layers / hidden"] == "3 / 512"
    assert table.loc["R-Transformer", "lr grid"] == "1, 2, 3"
    assert tables.config_table("mnist").set_index("model").loc["R-Transformer", "gradient clip"] == "none"
    assert (table.loc["R-Transformer", "cell"], table.loc["LSTM", "optimizer"]) == ("GRU", "SGD")
    assert tables.config_table("mnist").set_index("model").loc["TCN", "lr schedule"] == "÷10 every 10 epochs"


def test_protocol_facts_read_the_configs_for_the_chapters_prose():
    char = tables.protocol_facts("ptb-char")
    cfg = run_config("ptb-char", "rtransformer", "paper").train
    assert (char["seq_len"], char["scored"], char["context"]) == (str(cfg.seq_len), str(cfg.scored),
                                                                  str(cfg.seq_len - cfg.scored))
    assert char["lr_grid"] == "$\\{1, 2, 3\\}$" and char["clip"] == f"norm {cfg.grad_clip:g}"
    music = tables.protocol_facts("nottingham")
    assert music["lr"] == "$5 \\cdot 10^{-5}$" and music["optimizer"] == "SGD"
    mnist = tables.protocol_facts("mnist")
    assert mnist["lr"] == "$10^{-3}$" and mnist["clip"] == "none" and "seq_len" not in mnist
    assert "window" not in tables.protocol_facts("mnist", "transformer")
    assert [tables.math_number(v) for v in (2, 0.15, 0.0015)] == ["$2$", "$0.15$", "$1.5 \\cdot 10^{-3}$"]


def test_context_free_reference_scores(real_data):
    assert 5 < tasks.music_frequency_nll("nottingham", real_data) < 20
    assert 3.5 < tasks.unigram_metric("char", real_data) < 5.5  # bits per character
    assert 400 < tasks.unigram_metric("word", real_data) < 1500  # perplexity


def test_analysis_figures_draw(real_data, tmp_path):
    run = _smoke_run("mnist", "rtransformer", tmp_path / "mnist", real_data)
    digit = analysis.analyze_run(run, tmp_path / "mnist.json", real_data)
    fig = plots.plot_digit_attention(digit)
    assert len(fig.axes) == 1 + digit["layers"] * digit["heads"]  # smoke: 2 layers, so first = middle
    assert plots.digit_attention_image(digit, 0, 0).shape == (28, 28)
    assert plots.plot_attention_distance([digit]).get_ylabel() == "mean attention distance (steps)"
    several = analysis.analyze_run(run, tmp_path / "mnist3.json", real_data, examples=3)
    fig = plots.plot_digit_attention(several)  # one row per digit: the digit, then each (layer, head)
    assert len(fig.axes) == 3 * (1 + several["layers"] * several["heads"])
    assert fig.axes[5].get_ylabel() == f"label {several['more_examples'][0]['example']['label']}\npredicted " \
        f"{several['more_examples'][0]['example']['prediction']}"
    ax = plots.plot_attention_distance([several])
    assert len(ax.lines) >= 3 + 1  # one thin line per example, and the uniform head
    assert "3 ex." in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    mean = plots.window_saliency_mean(several)
    assert mean.shape == torch.tensor(several["saliency"]["gradient"]).shape
    torch.testing.assert_close(torch.tensor(mean.sum(1)), torch.ones(len(mean), dtype=torch.float64), atol=1e-3, rtol=0)  # shares, rounded
    assert plots.plot_window_saliency(digit).get_xlabel() == "input inside the window"
    run = _smoke_run("ptb-char", "rtransformer", tmp_path / "char", real_data)
    text = analysis.analyze_run(run, tmp_path / "char.json", real_data)
    assert len(plots.plot_maps_side_by_side([text, text], layers=[0, 1]).axes) == 4
    texts = analysis.analyze_run(run, tmp_path / "chars.json", real_data, examples=3)
    assert plots.shared_examples([texts, text]) == [text["example"]["description"]]  # held by both
    fig = plots.plot_maps_side_by_side([texts, texts], layers=[0, 1], examples=2)
    assert len(fig.axes) == 2 * 4 and [sub.get_suptitle() for sub in fig.subfigs] == \
        [plots.excerpt_text(e) for e in analysis.examples_with_maps(texts)[:2]]
    assert plots.excerpt_text(texts).endswith("”") and "".join(texts["example"]["tokens"]).strip()[:20] in \
        plots.excerpt_text(texts, width=1000)
    square = plots.lower_triangle_to_square([[1.0], [0.5, 0.5]])
    assert square.tolist() == [[1.0, 0.0], [0.5, 0.5]]
    plots.plot_piano_roll(torch.zeros(10, 88))
    plots.plot_lm_windows([0, 320, 640], 400, 320)
    matplotlib.pyplot.close("all")


def test_analysis_of_the_largest_paper_model_stays_small(real_data, tmp_path):
    """Table 3's model (3 layers x 8 heads, d=512): full maps of a 64-character excerpt."""
    cfg = run_config("ptb-char", "rtransformer", "paper")
    model = tables.build_paper_model("ptb-char", "rtransformer", data_dir=real_data)
    (tmp_path / "record.json").write_text(json.dumps(dict(config=cfg.to_dict())))
    torch.save(model.state_dict(), tmp_path / "best.pt")
    result = analysis.analyze_run(tmp_path, tmp_path / "a.json", real_data, examples=analysis.MAP_EXAMPLES + 1)
    assert len(analysis.examples_with_maps(result)) == analysis.MAP_EXAMPLES
    assert (tmp_path / "a.json").stat().st_size < 1_000_000


def test_the_analysis_readme_lists_every_paper_analysis_as_it_is():
    """results/analysis/README.md's paper table: one row per committed paper-profile analysis,
    with its count of examples' maps and whether the figures show it (`pick_analyses`)."""
    folder = analysis.ANALYSIS_DIR
    rows = {}
    for line in (folder / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and "_paper_" in cells[0]:
            rows[cells[0].strip("`")] = cells
    shown = {item["run_id"] for item in analysis.pick_analyses(analysis.load_analyses(folder)).values()}
    papers = {item["run_id"]: item for item in analysis.load_analyses(folder) if item["profile"] == "paper"}
    assert sorted(rows) == sorted(f"{run}.json" for run in papers)
    for run, item in papers.items():
        _, _, maps, in_figures = rows[f"{run}.json"]
        assert int(maps) == len(analysis.examples_with_maps(item)), run
        assert in_figures.startswith("yes" if run in shown else "no"), run
