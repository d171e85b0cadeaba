"""Records -> cells, verdicts and claims (rtlib.results), and the report's sections (rtlib.report):
seeds, the lr chosen on validation, the tolerance, the Welch interval, what counts as evidence."""
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from rtlib import cost, plots, report, results, tasks  # noqa: E402
from rtlib.configs import ABLATIONS, experiment, run_config, with_variant  # noqa: E402
from rtlib.paths import RECORDS_DIR, REPEATS_DIR, REPO  # noqa: E402
from rtlib.results import cell, cells, claims, comparisons, evidence, load_records  # noqa: E402
from rtlib.tasks import TASKS  # noqa: E402

NAN = re.compile(r"\bnan\b", re.IGNORECASE)


def write_record(folder: Path, task="nottingham", model="rtransformer", profile="paper", lr=None,
                 seed=1111, test=2.5, valid=None, variant="", epochs=4, gpu_minutes=1.0, version=2,
                 status="finished", lr_cut_after=None, test_curve=None, with_config=False, precision="bf16"):
    """A small record with the fields `rtlib.train` writes (`with_config`: also the config the
    runner would give it, so that the sweep's planner counts it); `test_curve` gives the test metric of
    every epoch (default: `test` throughout), `lr_cut_after` the epoch after which the lr drops."""
    info = TASKS[task]
    lr = lr if lr is not None else {"nottingham": 5e-5, "mnist": 1e-3}.get(task, 2.0)
    no_valid = info.kind == "classify"
    valid = test if valid is None else valid
    tests = test_curve or [test] * epochs
    curve = []
    for e, value in enumerate(tests, start=1):
        rate = lr / 10 if lr_cut_after is not None and e > lr_cut_after else lr
        entry = dict(epoch=e, lr=rate, train_loss=5.0 / e, test_loss=value, test_metric=value)
        if not no_valid:
            entry.update(valid_loss=valid + (len(tests) - e), valid_metric=valid + (len(tests) - e))
        curve.append(entry)
    run_id = f"{task}_{model}_{profile}{'_' + variant if variant else ''}_lr{lr:g}_seed{seed}"
    record = dict(record_version=version, run_id=run_id, task=task, table=info.table, model=model,
                  profile=profile, variant=variant, seed=seed, lr=lr, metric=info.metric,
                  higher_is_better=info.higher_is_better, best_valid_loss=None if no_valid else valid,
                  best_valid_metric=None if no_valid else valid, test_metric=test, epochs_run=len(tests),
                  wall_time_s=60 * gpu_minutes, gpu_minutes=gpu_minutes, device="test GPU",
                  paper_value=info.paper.get(model), num_parameters=1000, git_commit="abc123",
                  curve=curve, changes=[], finished_at="2026-01-01T00:00:00Z")
    if version >= 2:
        record.update(status=status, precision=precision, best_epoch=len(tests), torch_version="2.11",
                      engine=dict(compile="none"), deviations=[],
                      selections=results_selections(curve, info.higher_is_better))
        if status == "diverged":
            record.update(test_metric=None, best_valid_metric=None, selections={})
    if with_config:
        record["config"] = run_config(task, model, profile, lr=lr, seed=seed).to_dict()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{run_id}.json").write_text(json.dumps(record))
    return record


def results_selections(curve, higher_is_better):
    from rtlib.run_folder import selection_rules
    return selection_rules(curve, higher_is_better)


def seeds(folder, values, **kwargs):
    for seed, value in zip(range(1111, 1111 + len(values)), values):
        write_record(folder, seed=seed, test=value, **kwargs)


def test_records_of_both_versions_load_and_smoke_runs_are_left_out(tmp_path):
    write_record(tmp_path / "a", version=1, profile="fast")
    write_record(tmp_path / "b", seed=1112)
    write_record(tmp_path / "c", profile="smoke", seed=1113)
    (tmp_path / "not-a-record.json").write_text("{\"hello\": 1}")
    records = load_records(tmp_path)
    assert sorted(records["profile"]) == ["fast", "paper"]
    old = records[records["record_version"] == 1].iloc[0]
    assert old["status"] == "finished" and old["precision"] == "not recorded" and old["selections"] == {}
    assert len(load_records(tmp_path, profiles=["smoke"])) == 1


def test_a_cell_is_the_mean_over_seeds_and_needs_three_for_a_verdict(tmp_path):
    seeds(tmp_path, [2.40, 2.42])
    row = cell(cells(load_records(tmp_path)), "nottingham", "rtransformer")
    assert row["n"] == 2 and row["mean"] == pytest.approx(2.41) and row["verdict"] == "inconclusive"
    assert row["std"] == pytest.approx(np.std([2.40, 2.42], ddof=1))
    write_record(tmp_path, seed=1113, test=2.41)
    row = cell(cells(load_records(tmp_path)), "nottingham", "rtransformer")
    sem = np.std([2.40, 2.42, 2.41], ddof=1) / math.sqrt(3)
    assert row["tolerance"] == pytest.approx(max(0.005, 2 * sem)) and row["verdict"] == "not reproduced"
    assert results.ours_text(row) == "2.41 ± 0.01 (n=3)"
    assert cell(cells(load_records(tmp_path)), "nottingham", "tcn")["verdict"] == "not run"


def test_tolerance_is_the_papers_rounding_or_two_standard_errors():
    assert results.tolerance("mnist", None) == pytest.approx(0.05)       # 99.1: one decimal
    assert results.tolerance("ptb-word", 0.001) == pytest.approx(0.005)  # 84.38: two decimals
    assert results.tolerance("nottingham", 0.1) == pytest.approx(0.2)
    paper = TASKS["nottingham"].paper["rtransformer"]
    assert results.verdict("nottingham", paper + 0.004, paper, 3, 0.0) == "reproduced"
    assert results.verdict("nottingham", paper + 0.006, paper, 3, 0.0) == "not reproduced"
    assert results.verdict("nottingham", paper, paper, 1) == "inconclusive"


def test_fast_and_diverged_runs_are_never_evidence(tmp_path):
    seeds(tmp_path, [2.37, 2.37, 2.37], profile="fast")
    write_record(tmp_path, seed=1111, status="diverged")
    records = load_records(tmp_path)
    row = cell(cells(records), "nottingham", "rtransformer")
    # a diverged run is a result without a number: the cell says so instead of "not run"
    assert row["n"] == 0 and row["verdict"] == "inconclusive" and row["diverged"] == 1 and row["runs"] == 1
    assert cell(cells(records, profile="fast"), "nottingham", "rtransformer")["verdict"] == "not evidence"
    assert "diverged (1 of 1 runs)" in results.paper_table(records, "nottingham").text()


def test_diverged_runs_are_named_with_their_lr_seed_and_epoch_in_every_section(tmp_path):
    for seed, epochs, minutes in ((1111, 10, 1.0), (1112, 23, 2.0)):
        write_record(tmp_path, model="lstm", lr=1e-3, seed=seed, epochs=epochs, status="diverged",
                     gpu_minutes=minutes, with_config=True)
    records = load_records(tmp_path)
    paragraph = report.results_paragraph(records, "nottingham")
    said = ("2 runs diverged (training loss not finite) at lr 0.001: seed 1111 in epoch 11 and seed 1112 "
            "in epoch 24")
    assert f"**LSTM**: **inconclusive**. No finished run yet: {said}; not run yet: lr 0.0001 of its grid." \
        in paragraph
    assert "LSTM" not in paragraph.split("Not run at the paper profile:")[1]
    assert said in report.gaps_table(records).text()
    assert "No paper-profile run has finished yet" in report.scope(records, [])
    assert "a row whose every run so far diverged is *inconclusive*" in report.how_sure()
    write_record(tmp_path, model="lstm", lr=1e-3, seed=1111, epochs=100, test=3.27, variant="precision=fp32")
    checked = report.results_paragraph(load_records(tmp_path), "nottingham")
    assert f"{said}; at the same lr and seed, the fp32 run at seed 1111: 3.27 after 100 epochs; not run yet: " \
        "lr 0.0001 of its grid." in checked
    (tmp_path / "nottingham_lstm_paper_precision=fp32_lr0.001_seed1111.json").unlink()
    before = cost.remaining(load_records(tmp_path / "none")).set_index("task").loc["nottingham"]
    after = cost.remaining(records).set_index("task").loc["nottingham"]
    # seed 1111's lr 0.001 diverged: it is done, and seeds 1112-1113 no longer wait on that lr
    assert after["finished"] == 1 and after["planned"] == before["planned"] - 2
    assert "2 runs diverged (3.0 GPU-minutes)" in report.scope(records, [])
    seeds(tmp_path, [3.30, 3.31, 3.29], model="lstm", lr=1e-4)
    records = load_records(tmp_path)
    assert "3.0 for 2 runs that diverged" in report.scope(records, [])
    # the cell's seeds are at lr 1e-4, chosen on validation: its diverged runs were at another lr
    assert "3.30 ± 0.01 (n=3); 2 runs at grid lr 0.001 diverged" in results.paper_table(records, "nottingham").text()
    assert f"Besides, {said}." in report.results_paragraph(records, "nottingham")


def test_lr_is_chosen_on_validation_over_common_seeds_never_on_test(tmp_path):
    seeds(tmp_path, [2.6, 2.6, 2.6], valid=2.5)                     # the config lr at 3 seeds
    write_record(tmp_path, lr=5e-4, seed=1111, valid=2.4, test=9.0)  # better validation at seed 1111
    chosen = results.select_lr(load_records(tmp_path))
    assert set(chosen["lr"]) == {5e-4} and "seeds 1111" in chosen["lr_selection"].iloc[0]
    write_record(tmp_path, task="mnist", lr=1e-3, test=20.0)
    write_record(tmp_path, task="mnist", lr=2e-3, test=30.0)         # better test: must lose
    mnist = results.select_lr(load_records(tmp_path)).query("task == 'mnist'")
    assert set(mnist["lr"]) == {1e-3} and "no validation split" in mnist["lr_selection"].iloc[0]


def test_welch_interval_of_a_difference_of_means():
    from scipy import stats

    a, b = [2.4, 2.5, 2.45], [3.15, 3.25, 3.2]  # equal spreads: Welch has 4 degrees of freedom
    found = results.compare(a, b, higher_is_better=False)
    se = math.sqrt(np.var(a, ddof=1) / 3 + np.var(b, ddof=1) / 3)
    assert found["advantage"] == pytest.approx(np.mean(b) - np.mean(a)) and found["df"] == pytest.approx(4)
    assert found["high"] - found["low"] == pytest.approx(2 * stats.t.ppf(0.975, 4) * se)
    assert math.isnan(results.compare([1.0], [2.0, 3.0], True)["low"])


def test_a_claim_is_supported_only_where_the_interval_says_so(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    seeds(tmp_path, [3.30, 3.32, 3.31], model="transformer")
    found = comparisons(load_records(tmp_path))
    t2 = found[(found["claim"] == "transformer") & (found["table"] == 2)].iloc[0]
    assert t2["verdict"] == "supported" and t2["low"] > 0
    claim = claims(load_records(tmp_path)).set_index("claim").loc["R-Transformer beats the Transformer on each table"]
    assert claim["verdict"] == "inconclusive"  # Tables 1, 3 and 4 are not tested
    assert "not tested: T1 vs Transformer" in claim["evidence"]
    # the paper's Table 4 has the LSTM ahead of the R-Transformer: that comparison is not claimed
    rnns = found[found["claim"] == "rnns"]
    assert not ((rnns["table"] == 4) & (rnns["baseline"] == "LSTM")).any() and len(rnns) == 11


def test_a_claim_is_contradicted_when_the_baseline_wins(tmp_path):
    for table_task in ("mnist", "nottingham", "ptb-char", "ptb-word"):
        worse, better = (90.0, 99.0) if table_task == "mnist" else (3.0, 2.0)
        for model, values in (("rtransformer", worse), ("transformer", better)):
            seeds(tmp_path, [values, values + 0.01, values - 0.01], task=table_task, model=model)
    found = claims(load_records(tmp_path)).set_index("claim")
    assert found.loc["R-Transformer beats the Transformer on each table", "verdict"] == "contradicted"
    assert found.loc["By a large margin", "verdict"] == "contradicted"
    assert found.loc["R-Transformer beats TCN", "verdict"] == "not tested"


def test_margin_claim_is_contradicted_by_a_tight_small_margin(tmp_path):
    seeds(tmp_path, [2.40, 2.41, 2.42])
    seeds(tmp_path, [2.50, 2.51, 2.52], model="transformer")  # better by 0.10; the paper says 0.97
    found = comparisons(load_records(tmp_path))
    margin = found[(found["claim"] == "margins") & (found["table"] == 2) & (found["baseline"] == "Transformer")]
    assert margin["verdict"].iloc[0] == "contradicted"


def test_an_ablation_baseline_has_no_paper_margin(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    seeds(tmp_path, [3.30, 3.32, 3.31], model="transformer")
    seeds(tmp_path, [4.20, 4.22, 4.21], model="transformer", variant="position=none")
    found = comparisons(load_records(tmp_path))
    positions = found[(found["claim"] == "positions") & (found["table"] == 2)].set_index("baseline")
    assert positions.loc["Transformer", "paper_margin"] == pytest.approx(3.34 - 2.37)
    assert math.isnan(positions.loc["Transformer without positions", "paper_margin"])
    text = results.comparison_text(positions.reset_index().iloc[1])
    assert text.startswith("T2 vs Transformer without positions: +1.80 [") and "paper" not in text


def test_html_tables_never_show_nan_and_mark_verdicts(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    records = load_records(tmp_path)
    shown = [results.claims_table(records), results.paper_table(records, "nottingham"),
             results.selections_table(records), report.gaps_table(records)]
    for table in shown:
        html = table._repr_html_()
        assert not NAN.search(html) and not NAN.search(table.text())
    assert "✗ not reproduced" in shown[1].text() and "<i>3.07</i>" in shown[1]._repr_html_()
    table = results.HTMLTable(results.pd.DataFrame({"a": ["<b> `x`"], "verdict": ["supported"]}))
    assert "&lt;b&gt; <code>x</code>" in table._repr_html_() and "#d8f0d8" in table._repr_html_()


def test_selection_rules_say_how_much_of_a_gap_a_rule_could_close(tmp_path):
    # best validation epoch = the last; the best test epoch is the paper's number
    write_record(tmp_path, test=2.6, test_curve=[3.0, 2.37, 2.6, 2.6])
    rules = results.selections(load_records(tmp_path)).iloc[0]
    assert rules["best_valid"] == pytest.approx(2.6) and rules["best_test"] == pytest.approx(2.37)
    assert rules["rule_explains"] == pytest.approx(1.0)
    write_record(tmp_path, task="mnist", model="tcn", lr=2e-3, test=98.0)
    shown = results.selections_table(load_records(tmp_path))._repr_html_()
    assert "no validation split" in shown and "not recorded" not in shown


def test_lr_cuts_read_the_logged_learning_rates():
    curve = [dict(epoch=1, lr=1.0), dict(epoch=2, lr=1.0), dict(epoch=3, lr=0.1), dict(epoch=4, lr=0.01)]
    assert results.lr_cuts(curve) == [2, 3]


def test_a_seed_that_carries_the_gap_is_named_with_its_lr_trace(tmp_path):
    write_record(tmp_path, seed=1111, test=2.83, lr_cut_after=1)
    write_record(tmp_path, seed=1112, test=2.40, lr_cut_after=3)
    write_record(tmp_path, seed=1113, test=2.38, lr_cut_after=3)
    found = report.gap_evidence(load_records(tmp_path), "nottingham", "rtransformer")
    assert "seed 1111" in found["explanation"] and "after epoch 1" in found["explanation"]
    assert "without it the mean is 2.39" in found["explanation"]
    assert any(item.startswith("lr first cut after epoch: 1111 → 1") for item in found["evidence"])


def test_a_gap_without_evidence_says_unexplained_and_what_is_untested(tmp_path):
    seeds(tmp_path, [3.10, 3.11, 3.12], model="transformer")
    found = report.gap_evidence(load_records(tmp_path), "nottingham", "transformer")
    assert "unexplained" in found["explanation"] and "the no positions ablation" in found["explanation"]
    assert "better than the paper's" in found["explanation"]


def test_a_diverged_grid_point_counts_as_tested(tmp_path):
    seeds(tmp_path, [3.10, 3.11, 3.12], model="transformer")
    write_record(tmp_path, model="transformer", lr=5e-6, test=3.3)
    assert "the lr grid" in report.gap_evidence(load_records(tmp_path), "nottingham", "transformer")["explanation"]
    write_record(tmp_path, model="transformer", lr=5e-4, status="diverged", epochs=1)
    assert "the lr grid" not in report.gap_evidence(load_records(tmp_path), "nottingham", "transformer")["explanation"]


def test_an_ablation_reads_against_its_rows_seeds_and_with_enough_seeds_as_an_interval():
    reading = results.ablation_reading
    assert reading([], [2.4, 2.5, 2.8], False) == "not run"
    assert reading([2.6], [], False) == "its row is not run"
    assert reading([3.3], [2.4, 2.5, 2.8], False).startswith("worse than every seed of the row (1 seed against 3")
    assert reading([2.3], [2.4, 2.5, 2.8], False).startswith("better than every seed of the row")
    assert reading([2.6], [2.4, 2.5, 2.8], False).startswith("within the row's seeds")
    assert reading([99.0], [98.4, 98.5], True).startswith("better than every seed")  # higher is better
    assert reading([4.2, 4.3, 4.1], [3.1, 3.2, 3.15], False).startswith("worse: the 95% interval")
    assert reading([3.1, 3.3, 3.2], [3.1, 3.2, 3.3], False).startswith("no change shown")


def test_the_ablations_table_lists_every_planned_ablation_with_its_row(tmp_path):
    from rtlib.configs import ABLATIONS
    seeds(tmp_path, [2.4, 2.5, 2.8])
    write_record(tmp_path, variant="window=1", test=4.2)
    records = load_records(tmp_path)
    found = results.ablation_effects(records)
    assert len(found) == len(ABLATIONS)
    window = found[found["variant"] == "window=1"].iloc[0]
    assert (window["n"], window["with_it"], window["without"]) == (1, "4.20 (n=1)", "2.57 ± 0.21 (n=3)")
    assert window["change"] == pytest.approx(4.2 - np.mean([2.4, 2.5, 2.8]))
    assert found[found["variant"] == "position=none"]["planned_seeds"].tolist() == [3, 3]
    text = results.ablations_table(records).text()
    assert not NAN.search(text) and "+1.633" in text and "not run" in text
    assert "1 of the 15 planned ablations have paper-profile records (1 of the 19 runs planned)" in \
        report.ablations_summary(records)
    assert "with window M=1: 4.20 (n=1) against 2.57 ± 0.21 (n=3)" in report.results_paragraph(records, "nottingham")


def test_the_window_figure_shows_the_released_window_beside_its_ablations(tmp_path):
    seeds(tmp_path, [2.8, 2.4, 2.4])
    assert results.window_points(load_records(tmp_path)).empty  # no ablation: no figure
    assert plots.plot_window_ablations(load_records(tmp_path)) is None
    write_record(tmp_path, variant="window=12", test=2.6)
    write_record(tmp_path, variant="window=1", test=4.2)
    records = load_records(tmp_path)
    points = results.window_points(records)
    assert sorted(points["window"]) == [1, 6, 6, 6, 12] and points["released"].sum() == 3
    assert plots.plot_window_ablations(records) is not None
    assert report.window_findings(records) == (
        "On Table 2 (Nottingham, NLL), M = 1 gives 4.20 and M = 12 gives 2.60; the released M = 6 gives "
        "2.80 at seed 1111 and 2.53 ± 0.23 over its 3 seeds.")


def test_a_worse_cell_still_improving_at_its_last_epoch_says_so(tmp_path):
    epochs = run_config("nottingham", "rnn", "paper").train.epochs
    for seed, test in zip((1111, 1112, 1113), (4.45, 4.84, 4.95)):
        write_record(tmp_path, model="rnn", lr=1e-3, seed=seed, test=test, epochs=epochs, lr_cut_after=20 + seed % 10)
    found = report.gap_evidence(load_records(tmp_path), "nottingham", "rnn")
    assert "worse than the paper's" in found["explanation"]
    assert f"among the schedule's last 3 ({epochs}, {epochs} and {epochs})" in found["explanation"]
    assert "after the lr was first cut at epoch 21–23" in found["explanation"]
    record = write_record(tmp_path, model="rnn", lr=1e-3, seed=1113, test=4.95, epochs=epochs)
    record["best_epoch"] = epochs - 3  # one seed peaked earlier: no longer a sign of a short schedule
    (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    assert "still improving" not in report.gap_evidence(load_records(tmp_path), "nottingham", "rnn")["explanation"]
    seeds(tmp_path / "better", [3.10, 3.11, 3.12], model="transformer", epochs=epochs)  # better: not a cause
    assert "still improving" not in report.gap_evidence(load_records(tmp_path / "better"), "nottingham",
                                                        "transformer")["explanation"]


def test_a_classifier_that_never_left_chance_says_so_and_names_its_own_settings(tmp_path):
    for seed, test in zip((1111, 1112, 1113), (8.9, 9.8, 8.9)):
        record = write_record(tmp_path, task="mnist", model="rnn", seed=seed, test=test, epochs=3)
        for entry in record["curve"]:
            entry["train_loss"] = 2.31 + 0.01 * entry["epoch"]
        (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    found = report.gap_evidence(load_records(tmp_path), "mnist", "rnn")
    assert "the model never learned; why is unexplained; not yet tested: lr 0.0001 and 0.002 of the lr grid " \
        "{0.0001, 0.001, 0.002}, which the sweep does not run (no validation split to choose an lr on)." \
        in found["explanation"]
    assert "training loss at chance (ln 10 = 2.30) throughout: lowest 2.32 over every seed and epoch" in found["evidence"]
    assert any(item.startswith("settings: not given by the paper") for item in found["evidence"])
    seeds(tmp_path, [98.4, 98.5, 98.6], task="mnist", model="gru")  # a training loss of 5/epoch: it learned
    assert "never learned" not in report.gap_evidence(load_records(tmp_path), "mnist", "gru")["explanation"]


def test_a_classifier_that_left_chance_late_or_fell_back_says_when(tmp_path):
    losses = {1111: [2.30, 2.29, 1.40, 2.31], 1112: [2.30, 2.30, 2.30, 1.10], 1113: [2.30, 2.10, 1.20, 0.90]}
    for seed, test in zip(losses, (20.2, 69.2, 69.5)):
        record = write_record(tmp_path, task="mnist", model="lstm", seed=seed, test=test, epochs=4)
        for entry, loss in zip(record["curve"], losses[seed]):
            entry["train_loss"] = loss
        (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    records = load_records(tmp_path)
    found = report.gap_evidence(records, "mnist", "lstm", report.GapSources(records, tmp_path / "none"))
    assert "training loss first below chance (ln 10 = 2.30) in epoch: 1111 → 3, 1112 → 4, 1113 → 2" in found["evidence"]
    assert "training loss back at chance in the last epoch: seed 1111 (lowest 1.40 in epoch 3)" in found["evidence"]
    assert found["explanation"] == (
        "Ours is worse than the paper's by 34.23: the training loss first fell below chance in epoch 2–4 of 20 "
        "at every seed; at seed 1111 it was back at chance in the last epoch, where the metric is read; why is "
        "unexplained; not yet tested: lr 0.0001 and 0.002 of the lr grid {0.0001, 0.001, 0.002}, which the sweep "
        "does not run (no validation split to choose an lr on).")
    # the row's runs under settings it no longer uses are named beside the gap, averaged nowhere
    write_record(tmp_path / "superseded" / "records", task="mnist", model="lstm", seed=1111, epochs=5,
                 status="diverged", precision="bf16")
    write_record(tmp_path / "superseded" / "records", task="mnist", model="lstm", seed=1113, test=90.79, epochs=20,
                 precision="bf16")
    write_record(tmp_path / "superseded" / "repeats" / "records", task="mnist", model="lstm", seed=1111, epochs=7,
                 status="diverged", precision="bf16")
    found = report.gap_evidence(records, "mnist", "lstm", report.GapSources(records, tmp_path / "superseded"))
    earlier = ("bf16, lr 0.001: seed 1111 diverged in epoch 6, seed 1111 (made again) diverged in epoch 8 and "
               "seed 1113 90.8 after 20 epochs")
    assert f"superseded runs (earlier settings): {earlier}" in found["evidence"]
    assert found["explanation"].endswith(f"Its superseded runs, under settings the row no longer uses ({earlier}), "
                                         "are averaged by no table (`results/superseded/`).")
    assert cell(cells(records), "mnist", "lstm")["n"] == 3  # and no cell counts them


def test_cudnn_error_reads_the_worst_table_of_each_equivalence_file():
    bench = [dict(device="GPU X", tables={"1": dict(cudnn_reference_grad_rel_error_vs_float64=2e-5),
                                          "4": dict(cudnn_reference_grad_rel_error_vs_float64=4.42e-4)}),
             dict(device="GPU Y", tables=[dict(table=1)])]
    assert report.cudnn_error(bench) == ("up to 4.4e-04 (relative error of the gradients, Table 4) off "
                                         "float64 on the GPU X")
    assert report.cudnn_error([]) == "not measured"


def test_evidence_rule_quotes_the_profile_and_seed_rule():
    from rtlib.results import EVIDENCE_PROFILE, MIN_SEEDS
    rule = report.evidence_rule()
    assert f"`{EVIDENCE_PROFILE}` profile" in rule and f"{MIN_SEEDS} seeds a cell" in rule


def test_chapter_paragraph_and_first_screen_follow_the_records(tmp_path):
    assert "No paper-profile records of Table 2" in report.results_paragraph(load_records(tmp_path), "nottingham")
    assert "No paper-profile runs" in report.scope(load_records(tmp_path), [])
    seeds(tmp_path, [2.40, 2.42, 2.41])
    records = load_records(tmp_path)
    paragraph = report.results_paragraph(records, "nottingham")
    assert "2.41 ± 0.01 (n=3) over seeds 1111, 1112, 1113" in paragraph and "not reproduced" in paragraph
    assert "Not run at the paper profile: RNN, GRU, LSTM, TCN and Transformer" in paragraph
    assert "3 paper-profile runs finished: 3 make 1 of the 24 cells" in report.scope(records, [])
    assert "5 claims, 5 are not tested" in report.headline(records)


def test_first_screen_names_the_claims_what_goes_against_them_and_the_unused_grid_points(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    seeds(tmp_path, [2.30, 2.31, 2.32], model="transformer")  # the Transformer ahead on Table 2
    write_record(tmp_path, model="transformer", lr=5e-6, test=3.0, valid=3.0)  # a grid point, not chosen
    write_record(tmp_path, variant="window=3", gpu_minutes=2.5)  # an ablation: counts in the cost alone
    records = load_records(tmp_path)
    assert "7 paper-profile runs finished: 6 make 2 of the 24 cells" in report.scope(records, [])
    assert "2.5 for 1 ablation run ({ref}`report-ablations`)" in report.scope(records, [])
    assert "×n: seeds), 1 the cells do not use, at an lr validation did not choose: 1 lr grid point at seed " \
        "1111. Precision" in report.scope(records, [])
    headline = report.headline(records)
    assert "are contradicted (“beats the Transformer”, “needs no positions” and “by the paper's margin”)" in headline
    assert "Against the paper, the R-Transformer is behind the Transformer on Table 2 (95% intervals" in headline
    assert "Of the 2 cells with 3 seeds, 0 are within tolerance" in headline and "22 are not run" in headline


def test_scope_tells_grid_points_from_later_seeds_run_at_an_lr_not_chosen(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41], lr=5e-4)  # the lr validation chose
    seeds(tmp_path, [3.0, 3.1], lr=5e-5)  # the config's lr: seed 1111 a grid point, seed 1112 run before the choice
    text = report.scope(load_records(tmp_path), [])
    assert "5 paper-profile runs finished: 3 make 1 of the 24 cells" in text
    assert ("2 the cells do not use, at an lr validation did not choose: 1 lr grid point at seed 1111 and 1 run at "
            "later seeds, made at the config's lr before the grid at seed 1111 had chosen another: Table 2 "
            "R-Transformer lr 5e-05 (seed 1112).") in text


def test_cost_prices_the_released_algorithm_and_what_is_left(data_mirror, tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41], gpu_minutes=2.0, epochs=2)
    records = load_records(tmp_path)
    bench = [dict(device="test GPU", tables=[dict(table=2, variants=dict(reference=dict(median_ms=6.0)))])]
    batches = [dict(stopped_at_the_deadline=[dict(run_id="ptb-word_rtransformer_paper_lr2_seed1111",
                                                   job_minutes=5.0, seconds_per_epoch=3.0)]),
               dict(lost_runs=[dict(run_id="ptb-word_rtransformer_paper_lr2_seed1111", job_minutes=2.0,
                                    seconds_per_epoch=3.0, why="failed with the jobs beside it"),
                               dict(run_id="ptb-word_transformer_paper_lr2_seed1111", job_minutes=0.0,
                                    why="failed before its first epoch")]),
               dict(finished=[dict(run_id="ptb-word_tcn_paper_lr4_seed1111", status="diverged", epochs=0,
                                   job_minutes=0.8, seconds_per_epoch=None)])]
    spent = cost.spent_by_table(records, batches, bench).set_index("table")
    assert spent.loc[4, "lost_runs"] == 3 and spent.loc[4, "lost_minutes"] == 7.0
    assert "3 runs were lost" in report.hard_parts(records, batches)
    assert "1 stopped at the batch's deadline; 1 failed with the jobs beside it" in report.hard_parts(records, batches)
    stops = [dict(run_id=f"ptb-char_lstm_paper_lr4_seed{seed}", job_minutes=1.0, seconds_per_epoch=pace,
                  why=f"stopped by its runner: projected to need {need} more minutes at {pace} s an epoch "
                      "(5/100 epochs), 20.8 left before the deadline, and its 46 MB of weights cannot leave the "
                      "machine (limit 0 MB)") for seed, pace, need in [(1111, 15.7, 23.6), (1113, 19.2, 30.4)]]
    # one kind of loss, however many paces: the batch logs keep each runner's numbers
    assert ("2 stopped by their runner, projected to miss the deadline with weights too large to leave the machine"
            in report.hard_parts(records, [dict(lost_runs=stops)]))
    came_back = dict(stops[0], why=stops[0]["why"] + " (its checkpoint came back, but the session had no device time")
    assert ("1 stopped by its runner, projected to miss the deadline with weights too large to leave the machine "
            "(its checkpoint came back, but no device time was left to resume it)"
            in report.hard_parts(records, [dict(lost_runs=[came_back])]))
    assert cost.remaining(records, batches).set_index("table").loc[4, "minutes_left"] > 0  # a lost run without a time per epoch prices nothing
    batches = batches[:1]
    spent = cost.spent_by_table(records, batches, bench).set_index("table")
    steps = cost.train_steps("nottingham", "rtransformer")
    assert spent.loc[2, "gpu_minutes"] == 6.0 and spent.loc[4, "lost_minutes"] == 5.0
    assert spent.loc[2, "released_minutes"] == pytest.approx(3 * 2 * steps * 6.0 / 60_000)
    left = cost.remaining(records, batches).set_index("table")
    assert left.loc[2, "finished"] == 0  # hand-made records do not carry the config the runner asks for
    assert left.loc[4, "minutes_left"] > 0 and left["planned"].sum() > 100
    timed = [dict(device="test GPU", cells=[dict(task="nottingham", model="gru", fastest_correct="step-graph",
                                                  modes={"step-graph": dict(ms_per_step=6.0)})])]
    floored = cost.remaining(records, batches, timed).set_index("table")
    assert floored.loc[2, "floored"] > 0 and floored.loc[2, "unpriced"] == left.loc[2, "unpriced"] - floored.loc[2, "floored"]
    assert floored.loc[2, "floor_minutes"] == pytest.approx(floored.loc[2, "floored"] * 6.0 * steps * 100 / 60_000)
    assert cost.step_minutes(timed, "nottingham", "lstm") != cost.step_minutes(timed, "nottingham", "lstm")  # NaN
    fp32 = [dict(device="test GPU", cells=[dict(timed[0]["cells"][0], precision="fp32", model="rtransformer")])]
    assert math.isnan(cost.step_minutes(fp32, "nottingham", "rtransformer"))  # an ablation's step prices no row run
    assert cost.step_minutes([dict(device="test GPU", cells=[dict(fp32[0]["cells"][0], precision="auto")])],
                               "nottingham", "rtransformer") > 0


def test_cost_prices_every_row_the_bench_timed_and_names_the_rows_it_cannot(data_mirror, tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41], gpu_minutes=2.0, epochs=2)
    seeds(tmp_path, [2.50, 2.52, 2.51], model="tcn", lr=1e-3, gpu_minutes=0.5, epochs=3)
    seeds(tmp_path, [2.30, 2.31, 2.32], model="transformer")
    seeds(tmp_path, [2.60, 2.61], model="gru", lr=1e-3)
    seeds(tmp_path, [1.30], task="ptb-char", model="tcn", lr=4.0)  # Table 3: none of its rows timed
    records = load_records(tmp_path)
    old = dict(device="test GPU", date="2026-11-01T00:00:00Z",  # written before the bench named models
               tables=[dict(table=2, variants=dict(reference=dict(median_ms=6.0)))])
    new = dict(device="test GPU", date="2026-12-01T00:00:00Z", tables=[
        dict(table=2, model="tcn", variants=dict(reference=dict(median_ms=2.0), fast=dict(median_ms=1.0))),
        dict(table=2, model="transformer", no_reference="no released Transformer baseline",
             variants=dict(fast=dict(median_ms=3.0))),
        dict(table=2, model="gru", variants=dict(reference=dict(error="RuntimeError: out of memory")))])
    elsewhere = dict(device="other GPU", tables=[dict(table=2, model="gru", variants=dict(reference=dict(median_ms=9.0)))])
    bench = [new, elsewhere, old]
    assert cost.reference_ms(bench, "test GPU") == {(2, "rtransformer"): 6.0, (2, "tcn"): 2.0}
    retimed = dict(old, date="2026-12-02T00:00:00Z", tables=[dict(table=2, model="tcn", variants=dict(
        reference=dict(median_ms=2.5)))])
    assert cost.reference_ms([retimed, new], "test GPU")[2, "tcn"] == 2.5  # the latest benchmark's

    spent = cost.spent_by_table(records, [], bench).set_index("table")
    steps = {model: cost.train_steps("nottingham", model) for model in ("rtransformer", "tcn")}
    released = 3 * 2 * steps["rtransformer"] * 6.0 / 60_000 + 3 * 3 * steps["tcn"] * 2.0 / 60_000
    assert spent.loc[2, "released_minutes"] == pytest.approx(released)
    assert tuple(spent.loc[2, ["priced_runs", "priced_minutes", "unpriced_runs", "runs"]]) == (6, 7.5, 5, 11)
    assert math.isnan(spent.loc[3, "released_minutes"]) and spent.loc[3, "unpriced_runs"] == 1
    assert spent.loc["all", "released_minutes"] == pytest.approx(released)

    shown = cost.cost_table(records, [], bench).frame.set_index("what").T.rename(lambda name: name.split()[-1])
    assert list(shown.index) == ["1", "2", "3", "4", "tables"]  # a column a table, then all
    shown = shown.rename({"tables": "all"}).rename(lambda name: int(name) if name.isdigit() else name)
    priced, ours = "released code, the runs it can be timed on (GPU-minutes)", "ours, the same runs (GPU-minutes)"
    assert shown.loc[2, priced] == f"{released:.1f} for 6 runs" and shown.loc[2, ours] == "7.5"
    assert shown.loc[2, "runs not priced: rows and why"] == \
        "5: Transformer (no released code); GRU (not benchmarked on test GPU)"
    assert (shown.loc[3, priced], shown.loc[3, ours]) == ("not benchmarked", "–")
    assert shown.loc[3, "runs not priced: rows and why"] == "1: TCN (not benchmarked on test GPU)"
    assert shown.loc[1, priced] == "–" and shown.loc[1, "runs not priced: rows and why"] == "none"
    text = cost.released_comparison(records, bench)
    assert (f"would take {released:.1f} GPU-minutes for the 6 runs it can be timed on (rows: R-Transformer on "
            "Table 2, TCN on Table 2), against our 7.5 for the same runs") in text
    assert text.endswith("Not priced: Transformer on Table 2 (no released code); GRU on Table 2, TCN on Table 3 "
                         "(not benchmarked on test GPU).")
    assert not NAN.search(text + shown.to_string())

    transformers = records[records["model"] == "transformer"]
    assert cost.cost_table(transformers, [], bench).frame.set_index("what").loc[priced, "Table 2"] == "no released code"
    assert "No finished paper-profile run can be timed" in cost.released_comparison(transformers, bench)
    assert "No paper-profile run has finished" in cost.released_comparison(transformers.iloc[:0], bench)

    assert cost.reference_spread(bench) is None and "good to a factor" not in text  # every row timed once
    slower = dict(new, date="2026-11-15T00:00:00Z", tables=[
        dict(table=2, model="tcn", variants=dict(reference=dict(median_ms=3.0), fast=dict(median_ms=1.02)))])
    spread = cost.reference_spread([*bench, slower])
    assert (spread["model"], spread["table"], spread["rows"]) == ("tcn", 2, 1)
    assert spread["ratio"] == pytest.approx(1.5) and spread["fast_ratio"] == pytest.approx(1.02)
    text = cost.released_comparison(records, [*bench, slower])
    assert ("These minutes are good to a factor of 1.5: the released engine's step of one row, timed by two "
            "benchmarks on the same GPU model (two leases: two hosts), differed that much (TCN, Table 2, test GPU, "
            "the widest of 1 row timed more than once; the latest timing prices), while our fastest mode on the "
            "same rows differed by at most 1.02×") in text


# The committed R-Transformer paper records' released-code minutes per table (and ours for the
# same runs), as the committed benchmarks price them (results/bench/NVIDIA_H200.json, entries
# without a model): pinned before the benchmark timed any other model.
PINNED_RELEASED = {1: (739.5549058914185, 59.356085851833335), 2: (77.70105476379395, 30.923322849966667),
                   3: (161.65610990524294, 55.48421935686666), 4: (95.60815964698791, 47.51089473686667)}


def test_committed_rtransformer_runs_cost_what_they_cost_before_other_models_were_benchmarked(data_mirror):
    records = load_records(RECORDS_DIR)
    records = records[records["finished_at"] <= "2026-12-06T13:12:36Z"]  # the records of the pin
    bench = report.load_bench()
    prices = cost.released_prices(records, bench).set_index(["table", "model"])
    spent = cost.spent_by_table(records[records["model"] == "rtransformer"], [], bench).set_index("table")
    for table, (released, ours) in PINNED_RELEASED.items():
        assert prices.loc[(table, "rtransformer"), "released_minutes"] == pytest.approx(released, rel=1e-9), table
        assert prices.loc[(table, "rtransformer"), "our_minutes"] == pytest.approx(ours, rel=1e-9), table
        assert prices.loc[(table, "rtransformer"), ["priced", "unpriced"]].tolist() == [3 + (table == 2), 0]
        assert spent.loc[table, "released_minutes"] == pytest.approx(released, rel=1e-9), table
        assert spent.loc[table, "priced_minutes"] == pytest.approx(ours, rel=1e-9), table
    assert spent.loc["all", "released_minutes"] == pytest.approx(1074.5202302074433, rel=1e-9)


def test_deviations_name_every_difference_with_its_basis(data_mirror, tmp_path, tmp_path_factory):
    bench = tmp_path_factory.mktemp("bench")  # the committed checks, without the engine-mode timings
    for path in report.BENCH_DIR.glob("*.json"):
        if not path.name.startswith("engine_modes"):
            (bench / path.name).write_text(path.read_text())
    seeds(tmp_path, [2.40, 2.42, 2.41])
    seeds(tmp_path, [1.30, 1.31], task="ptb-char")
    stacked = tmp_path / "ptb-char_rtransformer_paper_lr2_seed1112.json"
    stacked.write_text(json.dumps({**json.loads(stacked.read_text()),
                                   "engine": dict(compile="none", eval_windows_stacked=64)}))
    write_record(tmp_path, task="ptb-char", variant="window=3")  # an ablation: not counted, as in the other rows
    table = report.deviations(load_records(tmp_path), bench).frame.set_index("what")
    assert {"precision", "Transformer baseline", "PTB `<eos>`", "seq-MNIST order"} <= set(table.index)
    assert "bf16 (5 runs)" in table.loc["precision", "our paper-profile runs"]
    assert "the paper counted without them" in table.loc["PTB `<eos>`", "effect"]
    assert table.loc["evaluation", "our paper-profile runs"].endswith(
        "PTB: one window a forward in 1 run, up to 64 rows of windows a forward in 1 run")
    assert table.loc["precision: the fp32 ablations", "effect"].startswith("Table 1: not run yet; Table 2: not run yet;")
    assert table.loc["engine", "our paper-profile runs"].startswith("eager (5 runs); PyTorch")  # not "none"
    started = [dict(lost_runs=[dict(run_id="mnist_rtransformer_paper_precision-fp32_lr0.001_seed1111", epochs=1,
                                     job_minutes=6.0, seconds_per_epoch=None, why="unfinished at the deadline",
                                     checkpoint="brought back")])]  # batch ab
    table = report.deviations(load_records(tmp_path), bench, batches=started).frame.set_index("what")
    assert ("Table 1: not run yet (started: 1 of 50 epochs in 6.0 GPU-minutes, about 300 for the whole run at "
            "that pace, likely high: the minutes include compiling the step); Table 2: not run yet;"
            ) in table.loc["precision: the fp32 ablations", "effect"]
    started[0]["lost_runs"][0].update(epochs=3, job_minutes=7.0, seconds_per_epoch=30.0)  # timed past its compiling
    table = report.deviations(load_records(tmp_path), bench, batches=started).frame.set_index("what")
    assert ("Table 1: not run yet (started: 3 of 50 epochs in 7.0 GPU-minutes, about 25 for the whole run at "
            "that pace); Table 2") in table.loc["precision: the fp32 ablations", "effect"]
    write_record(tmp_path, variant="precision=fp32", seed=1111, test=2.38, precision="fp32")
    table = report.deviations(load_records(tmp_path), bench).frame.set_index("what")
    assert ("Table 2: 2.38 vs 2.41 for the row (1 seed vs 3; −0.020 against the row's run of the same seed 1111)"
            in table.loc["precision: the fp32 ablations", "effect"])
    cell = dict(task="mnist", model="rtransformer", fastest_correct="step-graph")
    (bench / "engine_modes_fp32.json").write_text(json.dumps(dict(device="test GPU", cells=[
        dict(cell, precision="fp32", modes={"none": dict(works=True, ms_per_step=130.0),
                                            "step-graph": dict(works=True, ms_per_step=120.0)})])))
    (bench / "engine_modes.json").write_text(json.dumps(dict(device="test GPU", cells=[
        dict(cell, precision="auto", modes={"step-graph": dict(works=True, ms_per_step=20.0)})])))
    table = report.deviations(load_records(tmp_path), bench).frame.set_index("what")
    minutes = 120.0 * cost.train_steps("mnist", "rtransformer") * 50 / 60_000
    assert ("Table 1: not run yet (its steps alone, timed in fp32 on test GPU: 120.0 ms a step in the engine mode "
            f"step-graph, the faster of it and none, bf16 20.0 ms in that mode; {minutes:.0f} GPU-minutes of steps "
            "for the whole run, without its evaluations); Table 2: 2.38") in table.loc["precision: the fp32 ablations", "effect"]
    timed = report.load_bench(bench)
    assert cost.step_timing(timed, "mnist", "rtransformer")["modes"]["step-graph"]["ms_per_step"] == 20.0
    assert cost.step_minutes(timed, "mnist", "rtransformer", precision="fp32") == pytest.approx(minutes)


def test_a_runs_floor_is_the_fastest_step_any_benchmark_timed_in_its_precision():
    """The step bench times steps alone; an --engine-modes epoch of 100 steps also carries its
    checkpoint and evaluation (PTB-word baselines: 4.3 ms a step alone, 10.5 in such epochs)."""
    modes = dict(task="ptb-word", model="rnn", fastest_correct="step-graph", modes={"step-graph": dict(ms_per_step=10.5)})
    steps = dict(table=4, model="rnn", precision="auto",
                 variants={"reference": dict(median_ms=11.3), "fast+step-graph": dict(median_ms=4.3),
                           "fast": dict(error="DataNotFoundError: ...")})
    bench = [dict(device="GPU a", cells=[modes]), dict(device="GPU b", tables=[steps])]
    assert cost.fastest_step_ms(bench, "ptb-word", "rnn") == 4.3
    assert cost.fastest_step_ms(bench[:1], "ptb-word", "rnn") == 10.5
    assert math.isnan(cost.fastest_step_ms(bench, "ptb-word", "rnn", precision="fp32"))  # the row's is bf16
    assert math.isnan(cost.fastest_step_ms([dict(tables=[dict(steps, table=3)])], "ptb-word", "rnn"))
    epochs = run_config("ptb-word", "rnn", "paper").train.epochs
    assert cost.step_minutes(bench, "ptb-word", "rnn") == pytest.approx(
        4.3 * cost.train_steps("ptb-word", "rnn") * epochs / 60_000)


def test_deviations_name_whole_runs_where_bf16_diverged_and_fp32_did_not(data_mirror, tmp_path):
    """bf16 runs superseded by the row's move to fp32 still count as evidence for that move."""
    superseded = tmp_path / "superseded"
    write_record(superseded / "records", model="lstm", lr=1e-3, epochs=10, status="diverged")
    write_record(superseded / "repeats" / "records", model="lstm", lr=1e-3, epochs=14, status="diverged")
    write_record(superseded / "records", model="lstm", lr=1e-3, seed=1112, epochs=23, status="diverged")
    write_record(tmp_path / "records", model="lstm", lr=1e-3, epochs=100, test=3.25, variant="precision=fp32",
                 precision="fp32")
    write_record(tmp_path / "records", model="lstm", lr=1e-3, seed=1112, epochs=100, test=3.3, precision="fp32")
    write_record(tmp_path / "records", model="gru", lr=1e-3, epochs=30, status="diverged")  # no fp32 twin: not named
    table = report.deviations(load_records(tmp_path / "records"), report.BENCH_DIR,
                              superseded_dir=superseded).frame.set_index("what")
    assert table.loc["precision: rows moved to fp32", "effect"] == (
        "whole runs where bf16 diverged: Table 2 LSTM, lr 0.001, seed 1111: bf16 diverged in epochs 11 and 15, "
        "fp32 3.25 after 100 epochs; Table 2 LSTM, lr 0.001, seed 1112: bf16 diverged in epoch 24, fp32 3.30 "
        "after 100 epochs")
    write_record(superseded / "records", model="lstm", lr=1e-3, seed=1113, epochs=100, test=3.20)  # bf16, finished
    write_record(tmp_path / "records", model="lstm", lr=1e-3, seed=1113, epochs=100, test=3.35, precision="fp32")
    table = report.deviations(load_records(tmp_path / "records"), report.BENCH_DIR,
                              superseded_dir=superseded).frame.set_index("what")
    assert table.loc["precision: rows moved to fp32", "effect"].endswith(
        "; superseded bf16 runs that finished, beside fp32: Table 2 LSTM, lr 0.001, seed 1113: bf16 3.20 after 100 "
        "epochs, fp32 3.35 after 100 epochs")
    assert table.loc["precision", "our paper-profile runs"].endswith(
        "; the Table 1 LSTM row and the Table 2 LSTM and RNN rows run in fp32, as released, because bf16 "
        "diverged there")


def test_superseded_runs_count_in_the_cost_and_never_in_a_table(tmp_path):
    seeds(tmp_path / "records", [2.40, 2.42, 2.41])
    write_record(tmp_path / "superseded" / "records", model="lstm", lr=1e-3, epochs=10, status="diverged",
                 gpu_minutes=2.5)
    records = load_records(tmp_path / "records")
    assert "2.5 for 1 run made with settings since changed" in report.scope(
        records, [], tmp_path / "none", tmp_path / "superseded")
    spent = cost.spent_by_table(records, [], [], repeats_dir=tmp_path / "none", superseded_dir=tmp_path / "superseded")
    assert tuple(spent.set_index("table").loc[2, ["superseded_runs", "superseded_minutes", "gpu_minutes"]]) == (1, 2.5, 3.0)
    assert cost.superseded_records(tmp_path / "none").empty


def test_ablation_runs_count_in_the_cost_apart_from_the_cells(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    write_record(tmp_path, variant="window=1", gpu_minutes=4.0)
    write_record(tmp_path, variant="norm=post", gpu_minutes=0.5, status="diverged", epochs=1)
    spent = cost.spent_by_table(load_records(tmp_path), [], [], repeats_dir=tmp_path / "none",
                        superseded_dir=tmp_path / "none").set_index("table")
    assert tuple(spent.loc[2, ["runs", "gpu_minutes", "ablation_runs", "ablation_minutes"]]) == (3, 3.0, 2, 4.5)
    assert spent.loc["all", "ablation_minutes"] == 4.5


def test_every_committed_paper_record_was_made_with_the_settings_configs_gives_its_run_now():
    """The tables average the records they find: a setting changed in configs.py (say, a row's
    precision) would silently mix runs of two experiments under one run id. Its prose (`source`) may
    be reworded."""
    for path in sorted([*(RECORDS_DIR / "paper").glob("*.json"), *(REPEATS_DIR / "paper").glob("*.json")]):
        record = json.loads(path.read_text())
        cfg = experiment(with_variant(run_config(record["task"], record["model"], record["profile"], lr=record["lr"],
                                                 seed=record["seed"]), record["variant"]).to_dict())
        made = experiment(record["config"])
        changed = sorted(key for key in {*cfg, *made} if cfg.get(key) != made.get(key))
        assert not changed, (f"{path.name} was made with other {', '.join(changed)} than configs.py gives its run "
                             "now: move it out of results/ (say to results/superseded/, with a note) or restore "
                             "the setting")


def test_committed_records_render_without_nan():
    records = load_records()
    for table in (results.claims_table(records), report.gaps_table(records), report.quick_looks(records),
                  *(results.paper_table(records, task) for task in ("mnist", "nottingham", "ptb-char", "ptb-word"))):
        assert not NAN.search(table._repr_html_())


def test_committed_records_render_with_readable_names():
    records = load_records()
    raw = re.compile(r"\b(batch_size|eval_batch_size|clip_before_backward|rtransformer|ptb-char|mnist)\b")
    shown = report.quick_looks(records)._repr_html_()
    assert not raw.search(shown) and "clipping (after backward) instead of the released no-op" in shown
    easy = report.easy_parts(records)
    assert "of the R-Transformer row" in easy and "two rows the authors ran" not in easy
    minutes = evidence(records).groupby("task")["gpu_minutes"].median()
    assert f"a median of {minutes['mnist']:.0f} GPU-minutes on Table 1" in easy
    assert report.easy_parts(records.iloc[:0]).count("no paper-profile run has been timed yet") == 1


def test_curves_carry_the_papers_number_and_say_when_there_is_nothing(tmp_path):
    ax = plots.plot_learning_curves(load_records(tmp_path), "mnist")
    assert ax.texts[0].get_text() == "no paper-profile records yet"
    seeds(tmp_path, [2.40, 2.42, 2.41])
    ax = plots.plot_learning_curves(load_records(tmp_path), "nottingham")
    labels = [line.get_label() for line in ax.get_lines()]
    assert "R-Transformer (n=3)" in labels and "paper: 2.37" in labels
    assert plots.plot_seed_trace_grid(load_records(tmp_path)) is not None


def test_report_notebook_renders_from_records_alone(data_mirror, tmp_path):
    import papermill as pm

    seeds(tmp_path / "records", [2.40, 2.42, 2.41])
    executed = pm.execute_notebook(str(REPO / "notebooks" / "report.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters=dict(records_dir=str(tmp_path / "records")),
                                   kernel_name="python3", cwd=str(REPO), progress_bar=False)
    text = json.dumps(executed.cells)
    assert "3 paper-profile runs finished: 3 make 1 of the 24 cells" in text and "not reproduced" in text
    assert not NAN.search(text)


def test_a_batch_line_counts_what_finished_what_was_lost_and_why():
    batch = dict(date="2026-12-01", git_commit="abc1234", device="NVIDIA H200", deadline_minutes=22,
                 machine_held_minutes=13.6, sharing="MPS, 3 jobs", not_started=["a", "b"],
                 finished=[dict(run_id="x"), dict(run_id="v", status="diverged")],
                 stopped_at_the_deadline=[dict(run_id="y", job_minutes=20.0)],
                 lost_runs=[dict(run_id="z", job_minutes=8.7, why="the machine was given back"),
                            dict(run_id="w", job_minutes=8.6, why="the machine was given back")])
    line = cost.batch_line(batch)
    assert line.startswith("Batch of 2026-12-01 at commit abc1234 on NVIDIA H200, 22-minute deadline, "
                           "machine held 13.6 minutes: 1 run finished, 1 diverged, 2 not started, 3 lost: ")
    assert "2 the machine was given back; 1 stopped at the batch's deadline." in line
    assert line.endswith("Sharing: MPS, 3 jobs.")
    cold = cost.batch_line({**batch, "device": "not recorded (one, lent)"})  # batches l and o: no record came back
    assert "on a lent GPU that no record came back to name, 22-minute deadline" in cold


def test_a_run_whose_checkpoint_came_back_waits_to_resume_and_is_not_lost(tmp_path):
    seeds(tmp_path, [2.40])
    records = load_records(tmp_path)
    batch = dict(date="2026-12-02", git_commit="abc1234", device="NVIDIA H200", deadline_minutes=23,
                 finished=[], not_started=[],
                 lost_runs=[dict(run_id="nottingham_lstm_paper_lr0.0001_seed1111", epochs=84, job_minutes=22.8,
                                 why="unfinished at the deadline", checkpoint="brought back"),
                            dict(run_id="nottingham_rnn_paper_lr0.001_seed1112", epochs=9, job_minutes=3.3,
                                 why="stopped by its runner")])
    assert [run["epochs"] for run in cost.unfinished_lost([batch], records)] == [9]
    assert [run["epochs"] for run in cost.unfinished_waiting([batch], records)] == [84]
    assert "0 not started, 1 stopped with a checkpoint brought back to resume, 1 lost: 1 stopped by its runner." \
        in cost.batch_line(batch)
    assert "3.3 for runs that were lost" in report.scope(records, [batch])
    resumed = records.assign(run_id="nottingham_lstm_paper_lr0.0001_seed1111",
                             sessions=[[dict(from_epoch=1), dict(from_epoch=85)]])
    assert "0 not started, 1 stopped and resumed later from its checkpoint, 1 lost: 1 stopped by its runner." \
        in cost.batch_line(batch, resumed)
    scope = report.scope(records, [batch], tmp_path / "no repeats", tmp_path / "no superseded")
    assert scope.startswith("**Scope.** 1 paper-profile run finished: 1 makes 1 of the 24 cells")
    assert ("**Cost: 27.1 GPU-minutes of job time in all**, on machines held 0.0 minutes (jobs share a GPU, so "
            "their time adds up to more): 1.0 for these runs, 3.3 for runs that were lost before they finished, "
            "22.8 for 1 run waiting to resume from a checkpoint brought back.") in scope
    spent = cost.spent_by_table(records, [batch], []).set_index("table")
    assert (spent.loc[2, "lost_minutes"], spent.loc[2, "waiting_runs"], spent.loc[2, "waiting_minutes"]) == (3.3, 1, 22.8)


def test_a_lost_run_resumed_from_its_checkpoint_is_no_longer_lost(tmp_path):
    seeds(tmp_path, [2.40])
    records = load_records(tmp_path)
    run_id = records["run_id"].iloc[0]
    batch = dict(lost_runs=[dict(run_id=run_id, epochs=65, job_minutes=22.9, why="unfinished at the deadline"),
                            dict(run_id="other", epochs=9, job_minutes=3.3, why="stopped by its runner")])
    assert [run["run_id"] for run in cost.unfinished_lost([batch], records)] == [run_id, "other"]
    records.at[records.index[0], "sessions"] = [dict(from_epoch=1), dict(from_epoch=66)]
    assert [run["run_id"] for run in cost.unfinished_lost([batch], records)] == ["other"]
    assert len(cost.unfinished_lost([batch])) == 2


def test_a_checkpoint_carried_further_by_a_later_batch_counts_once_as_that_batch_left_it():
    grid_point = "ptb-word_rtransformer_paper_lr3_seed1111"
    first = dict(lost_runs=[dict(run_id=grid_point, epochs=18, job_minutes=1.74, why="unfinished at the deadline",
                                 checkpoint="brought back")])
    later = dict(lost_runs=[dict(run_id=grid_point, epochs=35, job_minutes=3.13, why="still training",
                                 checkpoint="brought back")])
    assert [run["job_minutes"] for run in cost.unfinished_waiting([first, later])] == [3.13]
    assert [run["job_minutes"] for run in cost.unfinished_waiting([later, first])] == [3.13]
    from_scratch = dict(lost_runs=[dict(run_id=grid_point, epochs=40, job_minutes=2.0, why="stopped by its runner")])
    assert [run["epochs"] for run in cost.unfinished_lost([dict(lost_runs=[{**first["lost_runs"][0], "checkpoint": None}]),
                                                  from_scratch])] == [18, 40]


def test_a_run_made_twice_with_its_seed_is_shown_beside_its_first_run_and_counts_once(tmp_path):
    seeds(tmp_path / "records", [2.40, 2.42, 2.41])
    records = load_records(tmp_path / "records")
    assert "No paper-profile run has been made a second time yet" in report.same_seed_twice(records, tmp_path / "none")
    write_record(tmp_path / "repeats", seed=1111, test=2.4013)
    found = report.repeats(records, tmp_path / "repeats")
    assert len(found) == 1 and found["difference"].iloc[0] == pytest.approx(0.0013)
    text = report.same_seed_twice(records, tmp_path / "repeats")
    assert "1 paper-profile run made a second time" in text and "2.4000 then 2.4013 (+0.0013" in text
    assert "0.13 of the cell's std over seeds" in text
    assert len(load_records(tmp_path / "records")) == 3  # a repeat never joins the records the tables use
    spent = cost.spent_by_table(records, [], [], repeats_dir=tmp_path / "repeats").set_index("table")
    assert spent.loc[2, "repeat_minutes"] == 1.0 and spent.loc[2, "gpu_minutes"] == 3.0
    assert "1.0 for 1 run made a second time with their seed" in report.scope(records, [], tmp_path / "repeats")


def test_close_calls_name_what_a_stricter_interval_undecides_and_what_no_repeat_checks(tmp_path):
    seeds(tmp_path / "records", [2.40, 2.42, 2.41])
    seeds(tmp_path / "records", [2.80, 3.00, 3.20], model="transformer")  # ahead at 95%, not at 99%
    write_record(tmp_path / "repeats", seed=1111, test=2.4013)
    text = report.close_calls(load_records(tmp_path / "records"), tmp_path / "repeats")
    assert "Of the 3 comparisons decided at 95%, 3 would be inconclusive at 99%" in text
    assert "the Welch tests have 2.0 degrees of freedom" in text
    assert "- “beats the Transformer”: T2 vs Transformer: +0.59 [+0.095, +1.085]" in text
    assert "(the claim stays inconclusive)" in text  # the other tables are not tested
    assert "Of the 1 judged cell with a run made twice with one seed, 1 moved less than the cell's gap" in text
    assert "(the nearest: T2 R-Transformer moved 0.001 against a gap of 0.040)" in text
    assert "No repeat checks T2 Transformer, judged not reproduced" in text
    assert not NAN.search(text)
    seeds(tmp_path / "records", [2.95, 3.00, 3.05], model="transformer")  # ahead at 99% too
    assert "none would be inconclusive at 99%" in report.close_calls(load_records(tmp_path / "records"),
                                                                      tmp_path / "repeats")


def test_a_diverged_run_made_again_in_another_engine_mode_says_when_each_diverged(tmp_path):
    write_record(tmp_path / "records", model="lstm", lr=1e-3, epochs=10, status="diverged")
    path = tmp_path / "records" / "nottingham_lstm_paper_lr0.001_seed1111.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "engine": {"compile": "step-graph"}}))
    write_record(tmp_path / "repeats", model="lstm", lr=1e-3, epochs=100, test=3.25)
    records = load_records(tmp_path / "records")
    found = report.repeats(records, tmp_path / "repeats")
    assert len(found) == 1 and np.isnan(found["difference"].iloc[0])
    text = report.same_seed_twice(records, tmp_path / "repeats")
    assert "Table 2 LSTM seed 1111: diverged in epoch 11 then 3.2500 (engine step-graph, then none)." in text
    assert not NAN.search(text)


def test_a_repeat_at_another_lr_than_its_cells_seeds_is_not_read_against_that_cell(tmp_path):
    seeds(tmp_path / "records", [2.40, 2.50, 2.60])  # the cell, at the config's lr 5e-05
    write_record(tmp_path / "records", lr=1e-4, test=2.70)  # a grid point validation did not choose
    write_record(tmp_path / "repeats", lr=1e-4, test=2.71)
    records = load_records(tmp_path / "records")
    text = report.same_seed_twice(records, tmp_path / "repeats")
    assert "(+0.0100), at lr 0.0001: the cell's seeds ran at lr 5e-05" in text and "std over seeds" not in text
    assert "run made twice" not in report.close_calls(records, tmp_path / "repeats")


def test_batch_logs_load_in_the_order_they_ran(tmp_path):
    for name in ("2026-12-06_h100_aa", "2026-12-01_h200", "2026-12-06_h100_z", "2026-12-01_h200_b"):
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(name=name)))
    assert [batch["name"] for batch in cost.load_batches(tmp_path)] == [
        "2026-12-01_h200", "2026-12-01_h200_b", "2026-12-06_h100_z", "2026-12-06_h100_aa"]


def test_a_run_whose_kernel_died_at_its_start_is_a_lost_run_in_words(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    died = dict(run_id="nottingham_transformer_paper_lr5e-05_seed1112", epochs=0, job_minutes=0.1,
                seconds_per_epoch=None, why="failed: exit code 1: RuntimeError: Kernel died before replying to kernel_info")
    text = report.hard_parts(load_records(tmp_path), [dict(date="2026-12-06", finished=[], lost_runs=[died])])
    assert ("1 run was lost before it finished (0.1 GPU-minutes): 1 failed at its start, its notebook's "
            "kernel dead before it replied (runners retry that since).") in text
    twice = report.hard_parts(load_records(tmp_path), [dict(date="2026-12-06", finished=[], lost_runs=[died, died])])
    assert "2 failed at their start, their notebook's kernel dead" in twice


def test_an_ablation_is_also_read_against_its_own_seeds_of_the_row(tmp_path):
    seeds(tmp_path, [2.83, 2.41, 2.37])
    write_record(tmp_path, variant="precision=fp32", seed=1111, test=2.82)
    write_record(tmp_path, variant="window=12", seed=1111, test=2.61)
    found = results.ablation_effects(load_records(tmp_path))
    found = found[found["table"] == 2].set_index("variant")
    assert found.loc["precision=fp32", "same_seed_change"] == pytest.approx(2.82 - 2.83)
    assert found.loc["window=12", "shared_seeds"] == (1111,)
    assert found.loc["window=12", "change"] == pytest.approx(2.61 - np.mean([2.83, 2.41, 2.37]))
    assert math.isnan(found.loc["window=1", "same_seed_change"]) and found.loc["window=1", "shared_seeds"] == ()
    shown = results.ablations_table(load_records(tmp_path)).frame
    fp32 = shown[(shown["table"] == "T2") & (shown["run as"] == "`precision=fp32`")].iloc[0]
    assert fp32["change at the same seeds"] == "−0.010 (seed 1111)"
    assert ("R-Transformer with fp32: 2.82 (n=1) against 2.54 ± 0.25 (n=3) without it (−0.010 at the same "
            "seed 1111)") in report.results_paragraph(load_records(tmp_path), "nottingham")


def test_an_ablation_is_read_against_its_row_at_the_lr_it_ran_not_the_lr_chosen_on_validation(tmp_path):
    # the sweep runs ablations at the config's lr; where a grid point wins on validation, the
    # row's cell moves to it, but the ablation's change must stay the ablation's, not the lr's
    for seed, test in ((1111, 84.7), (1112, 84.2), (1113, 84.0)):
        write_record(tmp_path, task="ptb-word", lr=2.0, seed=seed, test=test, valid=91.2)
    write_record(tmp_path, task="ptb-word", lr=3.0, test=83.6, valid=89.9)
    write_record(tmp_path, task="ptb-word", lr=2.0, variant="window=3", test=88.2)
    records = load_records(tmp_path)
    assert cell(cells(records), "ptb-word", "rtransformer")["lr"] == 3.0
    found = results.ablation_effects(records)
    found = found[found["table"] == 4].set_index("variant")
    assert found.loc["window=3", "without"] == "84.30 ± 0.36 (n=3) at lr 2 (validation chose lr 3 for the table)"
    assert found.loc["window=3", "change"] == pytest.approx(88.2 - np.mean([84.7, 84.2, 84.0]))
    assert found.loc["window=3", "same_seed_change"] == pytest.approx(88.2 - 84.7)
    assert found.loc["window=18", "without"].startswith("84.30 ± 0.36 (n=3) at lr 2")  # not run: the config's lr
    by_task = results.ablations(records, "ptb-word").set_index("variant")
    assert (by_task.loc["window=3", "baseline"], by_task.loc["window=3", "baseline_n"]) == \
        (pytest.approx(np.mean([84.7, 84.2, 84.0])), 3)
    points = results.window_points(records)
    assert sorted(points[points["released"]]["value"]) == [84.0, 84.2, 84.7]
    assert set(points["lr"]) == {2.0} and set(points["chosen_lr"]) == {3.0}
    assert report.window_findings(records).endswith(
        "the released M = 9 gives 84.70 at seed 1111 and 84.30 ± 0.36 over its 3 seeds, all at lr 2 (validation chose "
        "lr 3 for the table).")
    assert "all at lr 2; the table's cell is lr 3" in plots.plot_window_ablations(records).axes[-1].get_title()
    evidence = report.gap_evidence(records, "ptb-word", "rtransformer")["evidence"]
    assert "ablation window M=3 (1 seed): 88.20 against 84.30 without it at lr 2 (validation chose lr 3 for the " \
        "table), +3.500 at the same seed 1111" in evidence


def test_a_seed_that_carries_a_gap_is_checked_against_its_fp32_run(tmp_path):
    for seed, test, cut in ((1111, 2.83, 24), (1112, 2.41, 52), (1113, 2.37, 54)):
        write_record(tmp_path, seed=seed, test=test, epochs=60, lr_cut_after=cut)
    records = load_records(tmp_path)
    assert "precision" not in report.gap_evidence(records, "nottingham", "rtransformer")["explanation"]
    write_record(tmp_path, seed=1111, test=2.82, epochs=60, lr_cut_after=24, variant="precision=fp32")
    found = report.gap_evidence(load_records(tmp_path), "nottingham", "rtransformer")["explanation"]
    assert ("Most of the gap comes from seed 1111 (2.83 against 2.41 and 2.37), whose lr was first cut after "
            "epoch 24 (the others: 52 and 54)") in found
    assert ("At the same lr and seed, the fp32 run had its lr first cut after epoch 24 as well and ended at "
            "2.82: this seed's first cut at that epoch is not an effect of the precision.") in found
    write_record(tmp_path / "later", seed=1111, test=2.40, epochs=60, lr_cut_after=50, variant="precision=fp32")
    for seed, test, cut in ((1111, 2.83, 24), (1112, 2.41, 52), (1113, 2.37, 54)):
        write_record(tmp_path / "later", seed=seed, test=test, epochs=60, lr_cut_after=cut)
    found = report.gap_evidence(load_records(tmp_path / "later"), "nottingham", "rtransformer")["explanation"]
    assert ("the fp32 run had its lr first cut after epoch 50, where the row's run had it first cut after "
            "epoch 24, and ended at 2.40.") in found


def test_a_claims_why_pairs_each_comparison_with_its_own_reason(tmp_path):
    seeds(tmp_path, [2.40, 2.42, 2.41])
    seeds(tmp_path, [2.30, 2.60, 2.45], model="lstm")  # straddles the R-Transformer: interval includes 0
    write_record(tmp_path, model="gru", seed=1111, test=3.30)  # one seed: fewer than a verdict needs
    why = claims(load_records(tmp_path)).set_index("claim").loc["R-Transformer beats the RNN, GRU and LSTM rows", "why"]
    assert "inconclusive: T2 vs GRU (3 v 1 seeds, fewer than 3); T2 vs LSTM (the interval includes 0)" in why


def test_a_variant_reads_as_the_prose_names_it():
    assert results.variant_name("precision=fp32") == "fp32"
    assert results.variant_name("clip_before_backward=false") == "clipping after backward()"
    assert results.variant_name("window=18") == "window M=18"  # a planned ablation (Table 4)
    assert results.variant_name("window=2") == "window M=2"  # a fast-profile look, not planned
    assert results.variant_name("norm=post") == "post-norm"
    assert results.variant_name("compile=none") == "compile=none"
    assert results.variant_name("") == ""
    assert not [a.variant for a in ABLATIONS if results.variant_name(a.variant) == a.variant]  # each has words


def test_an_ablation_reads_as_one_sentence_over_the_tables_that_plan_it(tmp_path):
    assert results.ablation_sentence(load_records(tmp_path), "norm=post") == \
        "No paper-profile run of post-norm has finished yet."
    for seed, test in ((1111, 2.83), (1112, 2.41), (1113, 2.37)):
        write_record(tmp_path, seed=seed, test=test, epochs=100)
    write_record(tmp_path, seed=1111, test=3.31, epochs=100, variant="norm=post")
    said = results.ablation_sentence(load_records(tmp_path), "norm=post")
    assert said.startswith("Trained at the paper profile, post-norm gives 3.31 (n=1) on Nottingham (Table 2, NLL) "
                           "against the row's 2.54 ± 0.25 (n=3), +0.480 at the same seed 1111: worse than every "
                           "seed of the row")
    assert said.endswith("Not run yet: Table 4.")  # Table 4 plans post-norm too


def test_seeds_that_carry_their_cells_gap_make_one_item_of_the_hard_parts(tmp_path):
    seeds(tmp_path, [2.83, 2.41, 2.37], lr_cut_after=2)
    seeds(tmp_path, [2.50, 3.34, 3.35], model="transformer")
    items = [line for line in report.hard_parts(load_records(tmp_path), []).splitlines()
             if "*One seed can carry a gap.*" in line]
    assert len(items) == 1
    assert "Table 2's R-Transformer seed 1111 had its lr first cut after epoch 2 and ended at 2.83" in items[0]
    assert "Table 2's Transformer seed 1111 never had its lr cut and ended at 2.50" in items[0]
    assert items[0].endswith("fewer than 3 seeds could not have shown either.")


def test_a_far_seed_on_the_papers_side_does_not_carry_the_gap(tmp_path):
    # Table 4's TCN: paper 88.68, seeds 87.79, 87.93 and 88.83; without the far seed the gap grows
    seeds(tmp_path, [87.79, 87.93, 88.83], task="ptb-word", model="tcn", lr=2.0)
    records = load_records(tmp_path)
    assert "Most of the gap" not in report.gap_evidence(records, "ptb-word", "tcn")["explanation"]
    assert "*One seed can carry a gap.*" not in report.hard_parts(records, [])
    seeds(tmp_path, [87.79, 87.93, 85.00], task="ptb-word", model="tcn", lr=2.0)  # away from the paper: it carries
    assert "Most of the gap comes from seed 1113" in \
        report.gap_evidence(load_records(tmp_path), "ptb-word", "tcn")["explanation"]


def test_a_seed_that_carries_the_gap_without_an_lr_cut_is_said_so(tmp_path):
    seeds(tmp_path, [2.50, 3.34, 3.35], model="transformer")
    explanation = report.gap_evidence(load_records(tmp_path), "nottingham", "transformer")["explanation"]
    assert "Most of the gap comes from seed 1111 (2.50 against 3.34 and 3.35), whose lr was never cut " \
           "(the others: never and never)" in explanation


def test_a_gap_that_the_lr_validation_chose_accounts_for_says_so(tmp_path):
    # Table 4's R-Transformer: the grid's lr 3 won on validation and beats the paper; at the
    # released script's lr 2 the seeds sit on the paper's number, so the gap is the lr choice
    for seed, test in ((1111, 84.7), (1112, 84.2), (1113, 84.0)):
        write_record(tmp_path, task="ptb-word", lr=2.0, seed=seed, test=test, valid=91.2)
    for seed, test in ((1111, 83.57), (1112, 83.73), (1113, 83.72)):
        write_record(tmp_path, task="ptb-word", lr=3.0, seed=seed, test=test, valid=89.9)
    found = report.gap_evidence(load_records(tmp_path), "ptb-word", "rtransformer")
    assert ("at the released script's lr 2 our seeds give 84.30 ± 0.36 (n=3), within tolerance of the paper's: "
            "the gap is the choice of lr.") in found["explanation"] and "unexplained" not in found["explanation"]
    assert "at the released script's lr 2 (validation chose lr 3): 84.30 ± 0.36 (n=3), within tolerance of the " \
        "paper's" in found["evidence"]
    # a baseline row's lr is the config's own choice (the paper gives none): said so, and a config
    # lr far from the paper's leaves the gap unexplained
    for seed, test in ((1111, 4.5), (1112, 4.8), (1113, 4.9)):
        write_record(tmp_path, model="rnn", lr=1e-3, seed=seed, test=test, valid=5.0)
    for seed, test in ((1111, 3.27), (1112, 3.28), (1113, 3.29)):
        write_record(tmp_path, model="rnn", lr=1e-4, seed=seed, test=test, valid=3.3)
    found = report.gap_evidence(load_records(tmp_path), "nottingham", "rnn")
    assert "unexplained" in found["explanation"]
    assert "At the config's lr 0.001, ours is 4.73 ± 0.21 (n=3), worse than the paper's, beyond tolerance." \
        in found["explanation"]


def test_an_fp32_ablation_is_priced_at_its_fp32_steps_never_at_its_bf16_rows_pace(data_mirror, tmp_path):
    """Table 3's fp32 ablation was priced at its row's 18.5 bf16 minutes; its steps alone, timed
    in fp32, take about 78."""
    records = load_records(tmp_path)  # none
    row = dict(run_id="ptb-char_rtransformer_paper_lr2_seed1112", status="finished", epochs=100,
               job_minutes=10.0, seconds_per_epoch=6.0)
    bench = [dict(device="test GPU", cells=[dict(task="ptb-char", model="rtransformer", precision="fp32",
                                                 fastest_correct="step-graph",
                                                 modes={"step-graph": dict(ms_per_step=40.0)})])]
    fp32 = cost.steps_minutes(40.0, "ptb-char", "rtransformer")
    left = cost.remaining(records, [dict(finished=[row])], bench).set_index("table").loc[3]
    without = cost.remaining(records, [dict(finished=[row])]).set_index("table").loc[3]
    assert left["floor_minutes"] == pytest.approx(fp32) and left["floored"] == 1
    assert without["minutes_left"] == left["minutes_left"]  # never at the row's pace: unpriced without a bench
    assert without["unpriced"] == left["unpriced"] + 1


def test_a_run_timed_only_by_its_compiling_epoch_is_priced_at_its_floor_where_one_is_benchmarked(data_mirror, tmp_path):
    """Batch ab stopped Table 1's fp32 ablation after 1 epoch in 6.0 minutes, compiling included:
    300 minutes for the run at that pace, where its steps alone take about 61."""
    records = load_records(tmp_path)  # none
    stopped = [dict(lost_runs=[dict(run_id="mnist_rtransformer_paper_precision-fp32_lr0.001_seed1111", epochs=1,
                                    job_minutes=6.0, seconds_per_epoch=None, why="unfinished at the deadline")])]
    assert cost.rough_prices(records, stopped) == {("mnist", "rtransformer", "precision-fp32")}
    bench = [dict(device="test GPU", cells=[dict(task="mnist", model="rtransformer", precision="fp32",
                                                 fastest_correct="step-graph",
                                                 modes={"step-graph": dict(ms_per_step=40.0)})])]
    floored = cost.remaining(records, stopped, bench).set_index("table").loc[1]
    rough = cost.remaining(records, stopped).set_index("table").loc[1]
    assert floored["floor_minutes"] == pytest.approx(cost.steps_minutes(40.0, "mnist", "rtransformer"))
    assert rough["minutes_left"] - floored["minutes_left"] == pytest.approx(6.0 * 50)  # without a bench: that pace
    stopped[0]["lost_runs"][0].update(epochs=3, seconds_per_epoch=30.0)  # timed past its compiling: a pace
    assert cost.rough_prices(records, stopped) == set()


@pytest.mark.parametrize("ms", [40.0, 10.0])
def test_a_run_whose_steps_alone_outlast_a_lease_is_named_among_the_hard_parts(data_mirror, tmp_path, ms):
    bench = [dict(device="test GPU", cells=[dict(task="ptb-char", model="rtransformer", precision="fp32",
                                                 fastest_correct="step-graph",
                                                 modes={"step-graph": dict(ms_per_step=ms)})])]
    minutes = cost.steps_minutes(ms, "ptb-char", "rtransformer")
    text = report.hard_parts(load_records(tmp_path), [], bench)
    named = (f"*Some runs outlast any lease.* The training steps alone, as benchmarked, of Table 3's R-Transformer "
             f"in fp32 (an ablation), seed 1111 ({minutes:.0f} GPU-minutes) take longer than the 30 minutes")
    assert (named in text) == (minutes > cost.LEASE_MINUTES)
    assert "Some runs outlast" not in report.hard_parts(load_records(tmp_path), [])  # nothing benchmarked, no claim


def test_a_gap_names_the_lr_grid_points_not_run_yet(tmp_path):
    """The PTB-char GRU row before and after batch al: lr 4 (the config's), then lr 1 ran, lr 20 not yet."""
    for seed in (1111, 1112, 1113):
        write_record(tmp_path, task="ptb-char", model="gru", lr=4.0, seed=seed, test=1.33)
    records = load_records(tmp_path)
    assert report._untested_causes("ptb-char", "gru", records) == ["lr 1 and 20 of the lr grid {1, 4, 20}"]
    assert report._untested_causes("ptb-char", "lstm", records) == ["the lr grid {1, 4, 20}"]  # none run
    write_record(tmp_path, task="ptb-char", model="gru", lr=1.0, seed=1111, test=1.33)
    assert report._untested_causes("ptb-char", "gru", load_records(tmp_path)) == ["lr 20 of the lr grid {1, 4, 20}"]
    write_record(tmp_path, task="ptb-char", model="gru", lr=20.0, seed=1111, test=1.40)
    assert report._untested_causes("ptb-char", "gru", load_records(tmp_path)) == []


def test_a_language_model_above_a_uniform_guess_says_when_and_at_which_lr(tmp_path, monkeypatch):
    """The PTB-word RNN at lr 20 of batch an: its training loss sat above ln 10,000 for 30 epochs."""
    monkeypatch.setattr(tasks, "task_corpus", lambda task, data_dir=None: SimpleNamespace(vocab_size=10_000))
    record = write_record(tmp_path, task="ptb-word", model="rnn", lr=20.0, test=640.0, epochs=6, lr_cut_after=2)
    for entry, loss in zip(record["curve"], [43.2, 22.1, 12.5, 8.5, 6.6, 6.5]):
        entry["train_loss"] = loss
    (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    found = report.gap_evidence(load_records(tmp_path), "ptb-word", "rnn")
    assert "training loss above a uniform guess's (ln 10,000 = 9.21) in epochs: 1111 → 1–3" in found["evidence"]
    assert found["explanation"] == (
        "Inconclusive: 1 seed of the 3 a verdict needs; ours − paper = +525.500 so far. The training loss was "
        "above a uniform guess's (ln 10,000 = 9.21) at seed 1111 in epochs 1–3 of 100 while its lr went from 20 "
        "to 2, and fell below it in epoch 4 at lr 2: a candidate cause of the gap; not yet tested: lr 4 of the "
        "lr grid {4, 20}.")
    for seed in (1112, 1113):  # three seeds, each blown up to the end: not reproduced, and said once
        record = write_record(tmp_path, task="ptb-word", model="rnn", lr=20.0, seed=seed, test=640.0, epochs=2)
        for entry in record["curve"]:
            entry["train_loss"] = 40.0
        (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    explanation = report.gap_evidence(load_records(tmp_path), "ptb-word", "rnn")["explanation"]
    assert "at seed 1112 in epochs 1–2 of 100 at lr 20, and never fell below it" in explanation
    assert explanation.endswith("Ours is worse than the paper's by 525.500.") and "unexplained" not in explanation
    seeds(tmp_path / "learned", [84.3, 84.4, 84.5], task="ptb-word")  # a loss of 5/epoch: below 9.21 throughout
    assert "uniform" not in report.gap_evidence(load_records(tmp_path / "learned"), "ptb-word",
                                                "rtransformer")["explanation"]


def test_the_uniform_guess_is_ln_of_the_vocabulary(real_data):
    assert tasks.uniform_loss("ptb-word", str(real_data)) == pytest.approx(math.log(10_000))
    assert tasks.uniform_loss("mnist") is None and tasks.above_uniform([dict(train_loss=99.0)], "mnist") == []


def test_a_curve_above_a_uniform_guess_ends_the_axis_there(tmp_path, monkeypatch):
    """The PTB-word RNN at lr 20 reached a test perplexity of 1e27 early: the axis would span 27
    decades and squash every other curve into one line."""
    monkeypatch.setattr(tasks, "task_corpus", lambda task, data_dir=None: SimpleNamespace(vocab_size=10_000))
    seeds(tmp_path, [84.3, 84.4, 84.5], task="ptb-word")
    ax = plots.plot_learning_curves(load_records(tmp_path), "ptb-word")
    assert not any("uniform guess" in line.get_label() for line in ax.get_lines())  # nothing to cap
    write_record(tmp_path, task="ptb-word", model="rnn", lr=20.0, test=640.0, test_curve=[1e27, 5e3, 640.0])
    for axes in (plots.plot_learning_curves(load_records(tmp_path), "ptb-word"),
                 plots.plot_seed_traces(load_records(tmp_path), "ptb-word", "rnn")):
        labels = [line.get_label() for line in axes.get_lines()]
        assert "a uniform guess: 10,000 (above it: off the chart)" in labels
        low, high = axes.get_ylim()
        assert 10_000 < high < 20_000 and low < 84.3


def test_hard_parts_name_the_runs_whose_lr_was_too_large(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "task_corpus", lambda task, data_dir=None: SimpleNamespace(vocab_size=10_000))
    seeds(tmp_path, [84.3, 84.4, 84.5], task="ptb-word")  # a training loss of 5/epoch: below ln 10,000
    assert "too large" not in report.hard_parts(load_records(tmp_path), [])
    record = write_record(tmp_path, task="ptb-word", model="rnn", lr=20.0, test=640.08, epochs=3)
    for entry, loss in zip(record["curve"], [43.2, 12.5, 6.5]):
        entry["train_loss"] = loss
    (tmp_path / f"{record['run_id']}.json").write_text(json.dumps(record))
    assert ("*An lr can be too large.* Table 4's RNN at lr 20, seed 1111 (epochs 1–2 of 3, ended at 640.08)"
            in report.hard_parts(load_records(tmp_path), []))


def test_a_floor_counts_a_model_variants_timing_only_at_the_width_the_engine_runs_the_row():
    """A bench cell of another model variant times another computation, except the hidden width
    the engine widens the row to on a GPU (rtlib.padding: the same function)."""
    def cell(variant, ms):
        return dict(task="ptb-char", model="rnn", fastest_correct="step-graph", model_variant=variant,
                    modes={"step-graph": dict(ms_per_step=ms)})
    bench = [dict(device="GPU", cells=[cell("hidden_size=1198", 19.0), cell("hidden_size=1280", 8.0),
                                       cell("hidden_size=1200", 9.4), cell("", 18.0)])]
    assert cost.fastest_step_ms(bench, "ptb-char", "rnn") == 9.4
    assert cost.step_timing(bench, "ptb-char", "rnn")["model_variant"] == "hidden_size=1200"
    lstm = [dict(device="GPU", cells=[dict(cell("hidden_size=704", 5.0), model="lstm")])]
    assert math.isnan(cost.fastest_step_ms(lstm, "ptb-char", "lstm"))  # never widened
