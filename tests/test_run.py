"""What the chapters say about runs and records (rtlib.run): a run's test metric in words, how the
committed records of a profile differ from its definition today, and how each row's lr was picked."""
import json

from rtlib.configs import run_config
from rtlib.results import load_records
from rtlib.results import drift_sentence, lr_choice_sentence, lr_grid_coverage, settings_drift
from rtlib.run import result_text
from test_results import write_record


def test_a_runs_result_reads_in_words_with_one_pair_of_parentheses():
    nll = dict(task="nottingham", metric="nll", test_metric=37.404, selection="best validation epoch (2 of 2)")
    assert result_text(nll) == "test NLL (nats per step): 37.40, from the best validation epoch (2 of 2)"
    mnist = dict(task="mnist", metric="accuracy", test_metric=12.5,
                 selection="final epoch (no validation split; never the best test epoch)")
    assert result_text(mnist).startswith("test accuracy (%): 12.5")
    assert result_text(dict(nll, test_metric=None, selection="none (diverged)", status="diverged")) == \
        "test NLL (nats per step): none (diverged)"


def fast_record(folder, model="rtransformer", **train):
    """A fast-profile Nottingham record whose config differs from today's fast profile by `train`."""
    record = write_record(folder, model=model, profile="fast")
    config = run_config("nottingham", model, "fast", lr=record["lr"]).to_dict()
    config["train"].update(train)
    path = folder / f"{record['run_id']}.json"
    path.write_text(json.dumps({**record, "config": config}))


def test_records_of_an_older_profile_definition_say_what_differs(tmp_path):
    assert drift_sentence(load_records(tmp_path), "nottingham") == \
        "No `fast`-profile record of this table is committed."
    fast_record(tmp_path / "fast_v1", batch_size=8, compile="reduce-overhead")  # compile: the engine's
    fast_record(tmp_path / "fast_v1", model="transformer", batch_size=8, epochs=100)
    drift = settings_drift(load_records(tmp_path), "nottingham").set_index("setting")
    assert set(drift.index) == {"batch_size", "epochs"} and drift.loc["batch_size", "records"] == 2
    assert (drift.loc["epochs", "recorded"], drift.loc["epochs", "today"]) == ("100", "30")
    text = drift_sentence(load_records(tmp_path), "nottingham")
    assert text.startswith("The 2 committed `fast`-profile records of this table (in `fast_v1/`) come from an earlier")
    assert "`batch_size` 8 (today 1)" in text and "`epochs` 100 (today 30; Transformer)" in text


def test_records_of_todays_profile_say_so(tmp_path):
    fast_record(tmp_path)
    assert drift_sentence(load_records(tmp_path), "nottingham").endswith("were trained with today's settings of the profile.")


def test_the_lr_choice_says_which_rows_ran_their_whole_grid(tmp_path):
    assert lr_choice_sentence(load_records(tmp_path), "ptb-char").startswith("No row of this table")
    for lr in (1.0, 2.0, 3.0):
        write_record(tmp_path, task="ptb-char", model="transformer", lr=lr, test=1.4 + lr / 100)
    write_record(tmp_path, task="ptb-char", model="rtransformer", lr=2.0, test=1.3)
    write_record(tmp_path, task="ptb-char", model="tcn", lr=4.0, test=1.3)
    write_record(tmp_path, task="ptb-char", model="gru", lr=1.0, test=1.5)
    write_record(tmp_path, task="ptb-char", model="gru", lr=4.0, test=1.4)
    coverage = lr_grid_coverage(load_records(tmp_path), "ptb-char").set_index("model")
    assert coverage.loc["transformer", "complete"] and not coverage.loc["gru", "complete"]
    assert lr_choice_sentence(load_records(tmp_path), "ptb-char") == (
        "The lr is chosen on validation over the whole grid for Transformer; over part of the grid for GRU; "
        "R-Transformer has run one lr of its grid so far, so its number comes from that lr, the rest of the "
        "grid untried; the grid of TCN holds one lr.")
    write_record(tmp_path, task="mnist", model="rtransformer")
    assert "no validation split" in lr_choice_sentence(load_records(tmp_path), "mnist")
