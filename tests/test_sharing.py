"""Jobs sharing one device, timed in processes of their own (rtlib.sharing)."""
import json

import pytest

from rtlib.bench import main as bench_main
from rtlib.data import DataNotFoundError
from rtlib.sharing import assign, measure, parse_round, worker_slots


def test_rounds_parse_and_reuse_the_fewest_worker_processes():
    rounds = [parse_round(text) for text in ("4:rtransformer", "4:rtransformer*3", "4:rtransformer*2+3:transformer")]
    assert rounds[2] == [(4, "rtransformer"), (4, "rtransformer"), (3, "transformer")]
    slots = worker_slots(rounds)
    assert slots == [(3, "transformer")] + [(4, "rtransformer")] * 3
    assert assign(rounds[1], slots) == [1, 2, 3] and assign(rounds[2], slots) == [1, 2, 0]


@pytest.mark.parametrize("text,named", [("5:rtransformer", "'5:rtransformer'"), ("4:gpt", "'4:gpt'"),
                                        ("4:rtransformer*0", "'0'"), ("4", "'4'")])
def test_a_bad_round_names_itself_and_the_allowed_values(text, named):
    with pytest.raises(ValueError, match=named) as error:
        parse_round(text)
    assert "[1, 2, 3, 4]" in str(error.value) or "whole number" in str(error.value)


def test_sharing_times_each_round_and_counts_shares_of_solo_speed(tmp_path):
    rounds = [parse_round("4:transformer"), parse_round("4:transformer*2")]
    seen = []
    result = measure(rounds, "cpu", seconds=1.0, profile="smoke", warmup=1, ready_timeout_s=300,
                     on_round=lambda so_far: seen.append([row["jobs"] for row in so_far["rounds"]]))
    assert seen == [["4:transformer"], ["4:transformer", "4:transformer+4:transformer"]]
    alone, shared = result["rounds"]
    assert result["workers"] == 2 and result["modes"] == ["none"]
    assert alone["n"] == 1 and alone["gain"] == pytest.approx(1.0)
    assert shared["n"] == 2 and all(job["steps_per_s"] > 0 and job["share"] > 0 for job in shared["per_job"])
    assert shared["gain"] == pytest.approx(sum(job["share"] for job in shared["per_job"]))


def test_bench_sharing_writes_its_report(tmp_path, capsys):
    out = tmp_path / "sharing.json"
    assert bench_main(["--device", "cpu", "--sharing", "4:transformer", "--sharing-seconds", "0.5",
                       "--sharing-profile", "smoke", "--warmup", "1", "--out", str(out)]) == 0
    assert out.exists() and "gain 1.00" in capsys.readouterr().out
    assert json.loads(out.read_text())["complete"] is True


def test_a_missing_data_set_stops_the_measurement_before_any_worker_starts(offline, monkeypatch):
    """Batch h: Table 4 workers without PTB data failed after the others had compiled, and the
    whole measurement was lost. The data is checked first now."""
    monkeypatch.setattr("subprocess.Popen", lambda *a, **k: pytest.fail("a worker started"))
    with pytest.raises(DataNotFoundError, match="cannot find data file music/Nottingham.mat"):
        measure([parse_round("2:gru+4:transformer")], "cpu", seconds=0.1, profile="smoke")
