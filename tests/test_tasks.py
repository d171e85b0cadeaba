"""Task protocols: metrics on hand-computed examples, LM windows, music batches, configs."""
import math

import pytest
import torch

from rtlib.configs import ABLATIONS, MODELS, PAPER, TABLE_TASKS, run_config, with_variant
from rtlib.models import build_model
from rtlib.step import GRAPH_LENGTH_MULTIPLE
from rtlib.tasks import TASKS, LanguageModelProtocol, MusicProtocol, make_protocol, metric_from_stats


def test_metrics_on_hand_computed_examples():
    assert metric_from_stats(TASKS["mnist"], dict(correct=3.0, count=4.0, loss_sum=0.0)) == 75.0
    assert metric_from_stats(TASKS["nottingham"], dict(loss_sum=12.0, count=4.0)) == 3.0
    assert metric_from_stats(TASKS["ptb-char"], dict(loss_sum=2 * math.log(2), count=2.0)) == pytest.approx(1.0)
    assert metric_from_stats(TASKS["ptb-word"], dict(loss_sum=3 * math.log(100), count=3.0)) == pytest.approx(100.0)


def test_music_loss_is_summed_binary_cross_entropy_over_keys_and_steps(real_data):
    protocol = MusicProtocol(run_config("nottingham", "rtransformer", "smoke"), data_dir=real_data)
    tune = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).repeat(1, 44)  # (3, 88)
    probability = 0.25

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, math.log(probability / (1 - probability)))

    loss, stats = protocol.batch_loss(Constant(), [tune])
    per_step = [-(44 * math.log(0.25) + 44 * math.log(0.75)), -(88 * math.log(0.25))]  # targets t=1,2
    assert float(loss) == pytest.approx(sum(per_step), rel=1e-5)
    assert float(stats["count"]) == 2.0


def test_music_batches_pad_and_mask_without_changing_the_metric(real_data):
    single = make_protocol(run_config("nottingham", "lstm", "smoke", eval_batch_size=1), data_dir=real_data)
    batched = make_protocol(run_config("nottingham", "lstm", "smoke", eval_batch_size=16), data_dir=real_data)
    torch.manual_seed(0)
    model = build_model(single.cfg, single.shape).eval()
    totals = []
    for protocol in (single, batched):
        loss_sum = count = 0.0
        with torch.no_grad():
            for batch in protocol.eval_batches("valid"):
                _, stats = protocol.batch_loss(model, batch)
                loss_sum, count = loss_sum + float(stats["loss_sum"]), count + float(stats["count"])
        totals.append((loss_sum / count, count))
    assert totals[0][1] == totals[1][1]
    assert totals[0][0] == pytest.approx(totals[1][0], rel=1e-5)


def test_music_padding_to_a_bucket_length_leaves_the_loss_unchanged(real_data):
    protocol = make_protocol(run_config("nottingham", "rtransformer", "smoke"), data_dir=real_data)
    torch.manual_seed(0)
    model = build_model(protocol.cfg, protocol.shape).eval()
    tunes = protocol.data["train"][:3]
    exact, padded = protocol.collate(tunes), protocol.as_tensors(tunes, GRAPH_LENGTH_MULTIPLE)
    assert padded[0].shape[1] % GRAPH_LENGTH_MULTIPLE == 0 and padded[0].shape[1] >= exact[0].shape[1]
    with torch.no_grad():
        (loss, stats), (padded_loss, padded_stats) = [protocol.tensor_loss(model, b) for b in (exact, padded)]
    assert float(padded_stats["count"]) == float(stats["count"]) == sum(len(t) - 1 for t in tunes)
    assert float(padded_loss) == pytest.approx(float(loss), rel=1e-5)


def test_music_train_order_depends_on_seed_and_epoch_only(real_data):
    protocol = make_protocol(run_config("nottingham", "rtransformer", "smoke", batch_size=1), data_dir=real_data)
    first = [id(b[0]) for b in protocol.train_batches(1)]
    assert first == [id(b[0]) for b in protocol.train_batches(1)]
    assert first != [id(b[0]) for b in protocol.train_batches(2)]
    assert sorted(first) == sorted(id(t) for t in protocol.data["train"])


def test_lm_windows_follow_tcn_protocol(real_data):
    protocol = LanguageModelProtocol(run_config("ptb-word", "rtransformer", "paper"), data_dir=real_data)
    assert protocol.window_starts(200) == [0, 40, 80, 120]  # 160 + 40 >= 199: skipped
    rows = protocol.data["train"]
    assert rows.shape == (16, 929_589 // 16)
    inputs, targets = protocol.train_batches(1)[1]
    assert inputs.shape == (16, 80) and torch.equal(inputs[:, 1:], targets[:, :-1])
    assert torch.equal(inputs[:, 0], rows[:, 40])


@pytest.mark.parametrize("task,model", [("ptb-char", "rtransformer"), ("ptb-word", "lstm")])
def test_lm_evaluation_stacks_windows_without_changing_the_sums(real_data, task, model):
    cfg = run_config(task, model, "smoke", eval_batch_size=1 if task == "ptb-char" else 10, eval_limit=2000)
    protocol = make_protocol(cfg, data_dir=real_data)
    torch.manual_seed(0)
    model = build_model(cfg, protocol.shape).eval()
    windows = protocol._windows("valid")
    stacks = list(protocol.eval_batches("valid"))
    assert len(stacks) < len(windows) / 5  # fewer, larger forwards
    assert [tuple(inputs.shape) for inputs, _ in stacks][0] == (64 // cfg.train.eval_batch_size * cfg.train.eval_batch_size,
                                                                 cfg.train.seq_len)
    assert torch.equal(torch.cat([w[0].flatten() for w in windows]), torch.cat([s[0].flatten() for s in stacks]))
    with torch.no_grad():
        one_by_one, stacked = ([protocol.batch_loss(model, batch)[1] for batch in batches] for batches in (windows, stacks))
    assert sum(float(s["count"]) for s in one_by_one) == sum(float(s["count"]) for s in stacked)
    # the loss is taken in fp32 (`batch_loss`): the sums agree to its rounding
    assert sum(float(s["loss_sum"]) for s in one_by_one) == pytest.approx(sum(float(s["loss_sum"]) for s in stacked),
                                                                         rel=1e-6)


def test_every_table_row_is_configured_with_its_paper_number():
    for table, task in TABLE_TASKS.items():
        assert TASKS[task].table == table
        for model in MODELS:
            assert (task, model) in PAPER
            assert model in TASKS[task].paper
            for profile in ("paper", "fast", "smoke"):
                cfg = run_config(task, model, profile)
                assert cfg.train.lr in cfg.train.lr_grid or profile != "paper"
                assert profile == "paper" or cfg.changes


def test_fast_profile_lists_every_change_from_paper():
    for task in TABLE_TASKS.values():
        for model in MODELS:
            paper, fast = run_config(task, model, "paper"), run_config(task, model, "fast")
            changed = {k for k, v in vars(fast.train).items() if vars(paper.train)[k] != v}
            listed = {change.split(":")[0] for change in fast.changes}
            assert changed and changed <= listed, (task, model, changed - listed)


OPTIMISATION = ("optimizer", "lr", "lr_grid", "grad_clip", "clip_before_backward", "batch_size", "precision")


def test_fast_profile_keeps_the_paper_optimisation_and_only_shortens_the_schedule():
    for task in TABLE_TASKS.values():
        for model in MODELS:
            paper, fast = run_config(task, model, "paper").train, run_config(task, model, "fast").train
            assert [getattr(fast, key) for key in OPTIMISATION] == [getattr(paper, key) for key in OPTIMISATION]
            assert fast.epochs < paper.epochs


def test_music_rows_of_the_released_scripts_clip_before_backward_as_released():
    for model in MODELS:
        cfg = run_config("nottingham", model, "paper")
        released = model in ("rtransformer", "transformer", "tcn")
        assert cfg.train.clip_before_backward == released, model
        assert ("before backward()" in cfg.source) == released
    paper_text = [a for a in ABLATIONS if a.variant == "clip_before_backward=false"]
    assert [(a.table, a.model) for a in paper_text] == [(2, "rtransformer")]


def test_tcn_rows_follow_the_tcn_suite():
    mnist = run_config("mnist", "tcn", "paper").train
    assert (mnist.schedule.kind, mnist.schedule.factor, mnist.schedule.every) == ("step", 0.1, 10)
    char = run_config("ptb-char", "tcn", "paper").head
    assert (char.init, char.init_scale, char.tied) == ("uniform", 0.1, True)


def test_every_ablation_is_a_valid_variant_of_its_row():
    for ablation in ABLATIONS:
        cfg = with_variant(run_config(TABLE_TASKS[ablation.table], ablation.model, "paper"), ablation.variant)
        assert cfg.variant == ablation.variant and cfg.train.seed == 1111
    windows = {(a.table, a.variant) for a in ABLATIONS if a.variant.startswith("window=")}
    assert windows == {(2, "window=1"), (2, "window=3"), (2, "window=12"),
                       (4, "window=1"), (4, "window=3"), (4, "window=18")}
    assert {a.table for a in ABLATIONS if a.variant == "precision=fp32"} == {1, 2, 3, 4}


def test_rnn_rows_are_matched_in_parameter_count(real_data):
    for task, reference in [("mnist", "lstm"), ("nottingham", "tcn"), ("ptb-char", "lstm")]:
        counts = {}
        for model in ("rnn", "gru", "lstm", "tcn"):
            protocol = make_protocol(run_config(task, model, "paper", train_limit=2, eval_limit=2),
                                     data_dir=real_data)
            counts[model] = sum(p.numel() for p in build_model(protocol.cfg, protocol.shape).parameters())
        for model in ("rnn", "gru", "lstm"):
            assert abs(counts[model] / counts[reference] - 1) < 0.02, (task, model, counts)
