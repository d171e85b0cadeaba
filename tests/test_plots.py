"""The figures' words: metric names with their units on the axes, the window ablation figure's
same-seed line, and the window saliency's offsets (rtlib.plots)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from rtlib import plots  # noqa: E402
from rtlib.results import load_records  # noqa: E402
from rtlib.tasks import metric_label  # noqa: E402
from test_results import seeds, write_record  # noqa: E402


def test_metrics_are_named_with_their_units():
    assert metric_label("nll") == "test NLL (nats per step)"
    assert metric_label("bpc", "validation") == "validation bits per character"
    assert metric_label("accuracy") == "test accuracy (%)" and metric_label("perplexity", "") == "perplexity"


def test_curve_axes_name_the_metric_in_words(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    records = load_records(tmp_path)
    assert plots.plot_learning_curves(records, "nottingham").get_ylabel() == "test NLL (nats per step)"
    assert plots.plot_learning_curves(records, "nottingham", quantity="valid_metric").get_ylabel() == \
        "validation NLL (nats per step)"
    assert plots.plot_seed_traces(records, "nottingham", "rtransformer").get_ylabel() == "test NLL (nats per step)"
    plt.close("all")


def test_the_window_figure_joins_one_seed_across_windows_and_shows_the_released_seeds_apart(tmp_path):
    seeds(tmp_path, [2.8, 2.4, 2.4])  # the released M = 6 at seeds 1111-1113
    write_record(tmp_path, variant="window=12", test=2.6)  # the ablations, at seed 1111
    write_record(tmp_path, variant="window=1", test=4.2)
    ax = plots.plot_window_ablations(load_records(tmp_path)).axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == "seed 1111 at every M")
    assert list(line.get_xdata()) == [1, 6, 12] and list(line.get_ydata()) == [4.2, 2.8, 2.6]  # same seed
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "released M = 6: its 3 seeds" in labels and "released M: mean ± std of 3 seeds" in labels
    diamond = next(c for c in ax.containers if c.get_label() == "released M: mean ± std of 3 seeds")
    assert diamond.lines[0].get_ydata()[0] == pytest.approx(np.mean([2.8, 2.4, 2.4]))
    assert ax.get_ylabel() == "test NLL (nats per step)"
    plt.close("all")


def test_window_saliency_offsets_read_t_minus_k_at_every_window():
    for window in (6, 9):
        analysis = dict(task="ptb-word", profile="paper", saliency={
            "gradient": [list(np.full(window, 1 / window))], "occlusion": [list(np.full(window, 1 / window))]})
        ax = plots.plot_window_saliency(analysis)
        assert [label.get_text() for label in ax.get_xticklabels()] == ["t"] + [f"t-{k}" for k in range(1, window)]
    plt.close("all")
