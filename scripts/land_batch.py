"""Land what one GPU batch (scripts/gpu_paper_batch.sh) brought back, on this machine:

- the records of finished runs into results/records/<profile>/, their notebooks stripped into
  results/notebooks/<profile>/, and those of repeats (`reproduce --cells again:RUN_ID`, run
  folders named <run id>.again) into results/repeats/records|notebooks/<profile>/; a record
  already committed with other content is never overwritten;
- the analyses made on the GPU machine into results/analysis/ (replacing a committed one without
  the attention maps of MAP_EXAMPLES examples), and the shipped best weights
  into runs/, analysed here on the CPU where the GPU machine made no analysis;
- the shipped run folders of unfinished runs into runs/, to carry back to a later lease;
- the sharing benchmark, if the batch ran one, into results/bench/sharing_<gpu>_<batch name>.json;
- the batch log, results/batches/<name>.json: what finished (epochs, job minutes, seconds an
  epoch at its mix), what was lost and why (the runners' own `stop` and `failed` lines, a run
  that failed before its first epoch included; "still training" when its runner had not ended
  as the records were packed, i.e. they came from `start` or `wait` and the machine went cold
  before `finish`; else "unfinished at the deadline"), and the settings given on the command line.

    python scripts/land_batch.py FETCHED_DIR --name 2026-12-02_h200_f --script "..." \
        --sharing "..." --deadline-minutes 23 --held-minutes 25.1 [--git-commit abc1234] \
        [--date 2026-12-02] [--note "..."] [--examples 4]

FETCHED_DIR is the device tool's `files_at` folder of the batch's `finish` call; `--more DIR...`
names those of its `more` calls, whose parts (scripts/transfer.py) are joined into runs/.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from rtlib.analysis import has_all_maps
from rtlib.deadline import epochs_logged
from rtlib.paths import REPO
from rtlib.reproduce import AGAIN, copy_results, notebooks_dir_for
from rtlib.run_folder import RecordError, atomic_write_json, read_record

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transfer  # noqa: E402  (scripts/transfer.py, beside this script)

STOP_LINE = re.compile(r"^stop +\[[^\]]*\] (?P<run>\S+): (?P<why>.*)$")
NOT_STARTED_LINE = re.compile(r"^remaining +(?P<run>\S+) +not started")  # the runner's summary table
SKIP_LINE = re.compile(r"^skip +\[[^\]]*\] (?P<run>\S+): not started")  # a runner's skip, before its summary
START_LINE = re.compile(r"^start +\[[^\]]*\] (?P<run>\S+)(?: \(resuming\))?$")
FAILED_LINE = re.compile(r"^failed +\[[^\]]*\] (?P<run>\S+) (?P<minutes>[\d.]+) min: (?P<error>.*)$")
SUMMARY_LINE = re.compile(r"^summary: ")  # a runner's last line: it has ended
STILL_TRAINING = ("still training when the records were packed (by `start` or `wait`): the machine went cold "
                  "before `finish`, and the run with it")


def unpack(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")


def unpack_parts(fetched: Path, name: str, into: Path) -> list[Path]:
    """The run folders in `name`.tar.part-* (split by the batch), unpacked into `into`/runs."""
    parts = sorted(fetched.glob(f"{name}.tar.part-*"))
    if not parts:
        return []
    with tempfile.TemporaryDirectory() as scratch:
        joined = Path(scratch) / f"{name}.tar"
        with open(joined, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        with tarfile.open(joined) as tar:
            names = tar.getnames()
            tar.extractall(into, filter="data")
    return sorted({into / Path(*Path(name).parts[:2]) for name in names
                   if Path(name).parts[0] == "runs" and len(Path(name).parts) > 2})


def steady_seconds_per_epoch(entries: list[dict]) -> float | None:
    """Seconds an epoch after the first (which compiles), from the log's wall clock."""
    timed = [entry["elapsed_s"] for entry in entries[1:] if "elapsed_s" in entry]
    return round((timed[-1] - timed[0]) / (len(timed) - 1), 2) if len(timed) > 1 else None


def logged_before(repo: Path, kind: str) -> set[tuple[str, int, float]]:
    """(run folder, epochs, job minutes) of the runs that earlier batch logs list under `kind`
    ("finished" or "lost_runs"): a later batch on the same warm machine packs them again (its runs/
    still holds them), but unless it ran them further they are not its runs. The minutes tell
    such a run from the same run lost at the same epoch on another machine (batches ab and af
    both stopped the PTB-char GRU seed 1112 at epoch 5)."""
    return {(run["run_id"], run["epochs"], run["job_minutes"]) for log in (repo / "results" / "batches").glob("*.json")
            for run in json.loads(log.read_text()).get(kind, [])}


def land_records(landed: Path, repo: Path, finished: list[dict], conflicts: list[str]) -> list[dict]:
    """Copy each landed record (and its notebook) into results/, noting it in `finished` and any
    refusal in `conflicts`; the records landed. A record an earlier batch log lists, committed
    with the same content, is left out (an earlier batch's run)."""
    records_landed, earlier = [], {run for run, *_ in logged_before(repo, "finished")}
    for record_path in sorted(landed.glob("runs/*/record.json")):
        run_dir = record_path.parent
        try:
            record = read_record(record_path)
        except RecordError as error:
            conflicts.append(str(error))
            continue
        run_id, profile = record["run_id"], record["profile"]
        records = repo / "results" / ("repeats" if run_dir.name.endswith(AGAIN) else "") / "records" / profile
        committed = records / f"{run_id}.json"
        if committed.exists() and json.loads(committed.read_text()) != record:
            conflicts.append(f"{run_dir.name}: a record with other content is committed in {records}; this one "
                             "is not landed (it stays in the fetched records.tgz)")
            continue
        if committed.exists() and run_dir.name in earlier:
            continue
        copy_results(record, run_dir, records, notebooks_dir_for(records))
        records_landed.append(record)
        finished.append(dict(run_id=run_dir.name, status=record.get("status", "finished"),
                             epochs=record["epochs_run"], job_minutes=round(record["gpu_minutes"], 2),
                             seconds_per_epoch=steady_seconds_per_epoch(record.get("curve", []))))
    return records_landed


def lost_runs(landed: Path, reasons: dict[str, str], failed: dict[str, float],
              earlier: set[tuple[str, int, float]] = frozenset()) -> list[dict]:
    """The runs with a log or a failure (`failed`, run id -> its job minutes) and no record, but
    those an earlier batch log lists as lost at the same epoch and minute (`earlier`, from
    `logged_before`).
    A run that failed before its first epoch has no log: its minutes are its runner's."""
    lost = []
    for run in sorted({log.parent.name for log in landed.glob("runs/*/log.jsonl")} | failed.keys()):
        run_dir = landed / "runs" / run
        if (run_dir / "record.json").exists() or run.startswith("_"):
            continue
        entries = epochs_logged(run_dir)
        minutes = entries[-1].get("elapsed_s", 0.0) / 60 if entries else failed.get(run, 0.0)
        if (run, len(entries), round(minutes, 2)) in earlier:
            continue
        lost.append(dict(run_id=run, epochs=len(entries), job_minutes=round(minutes, 2),
                         seconds_per_epoch=steady_seconds_per_epoch(entries),
                         why=reasons.get(run, "unfinished at the deadline")))
    return lost


def runner_events(landed: Path) -> tuple[dict[str, str], dict[str, float], list[str]]:
    """From the runners' logs: run id -> why it is lost (its runner stopped it early
    (`rtlib.deadline`), it failed, or its runner was still running when the logs were packed),
    the runs that failed -> their job minutes then, and the jobs they never started (the deadline
    came first; their summary tables). A run's last line says why: one that failed and started
    again is as that start left it (still training, or unfinished at the deadline, or stopped)."""
    reasons, failed, never = {}, {}, set()
    for log in sorted(landed.glob("runs/_logs/runner*.log")):
        lines = log.read_text().splitlines()
        ended = any(SUMMARY_LINE.match(line) for line in lines)
        for line in lines:
            if match := START_LINE.match(line):
                if ended:
                    reasons.pop(match["run"], None)
                else:
                    reasons[match["run"]] = STILL_TRAINING
            elif match := STOP_LINE.match(line):
                reasons[match["run"]] = "stopped by its runner: " + match["why"]
            elif match := FAILED_LINE.match(line):
                reasons[match["run"]] = "failed: " + match["error"]
                failed[match["run"]] = float(match["minutes"])
            elif match := NOT_STARTED_LINE.match(line) or SKIP_LINE.match(line):
                never.add(match["run"])
    return reasons, failed, sorted(never)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fetched", type=Path)
    parser.add_argument("--name", required=True, help="the batch log's name, e.g. 2026-12-02_h200_f")
    parser.add_argument("--script", required=True, help="the calls, as run")
    parser.add_argument("--sharing", required=True, help="how the jobs shared the GPU")
    parser.add_argument("--deadline-minutes", type=float, required=True)
    parser.add_argument("--held-minutes", type=float, required=True, help="the lease's held_s / 60")
    parser.add_argument("--git-commit", help="the commit the batch ran (default: its records')")
    parser.add_argument("--device", help="the GPU's name, as its records give it (default: theirs); the log adds ' (one, lent)'")
    parser.add_argument("--date", default=datetime.datetime.now(datetime.timezone.utc).date().isoformat())
    parser.add_argument("--note", default="")
    parser.add_argument("--examples", type=int, default=4, help="test examples an analysis covers")
    parser.add_argument("--more", type=Path, nargs="+", default=[],
                        help="the fetched folders of the batch's `more` calls (run folders in parts)")
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args(argv)
    log_path = args.repo / "results" / "batches" / f"{args.name}.json"
    if log_path.exists():
        parser.error(f"{log_path} exists: choose another --name")
    if not (args.fetched / "records.tgz").exists():
        parser.error(f"{args.fetched} has no records.tgz: not a batch's fetched files")
    in_parts = []
    if args.more:
        runs, missing = transfer.join(args.more, args.repo)
        if missing:
            parser.error(f"--more: parts {' '.join(missing)} are missing: call `more` until it says none are left")
        in_parts = [args.repo / run for run in runs]
    with tempfile.TemporaryDirectory() as scratch:
        landed = Path(scratch)
        unpack(args.fetched / "records.tgz", landed)
        if (args.fetched / "notebooks.tgz").exists():
            unpack(args.fetched / "notebooks.tgz", landed)
        finished, conflicts = [], []
        records_landed = land_records(landed, args.repo, finished, conflicts)
        reasons, failed, never_started = runner_events(landed)
        lost = lost_runs(landed, reasons, failed, logged_before(args.repo, "lost_runs"))
        sharing = landed / "runs" / "_logs" / "sharing.json"
        if sharing.exists():
            device = json.loads(sharing.read_text())["device"].replace(" ", "_")
            # one file a batch: a later measurement (other rounds, other code) never replaces one
            shutil.copy(sharing, args.repo / "results" / "bench" / f"sharing_{device}_{args.name}.json")
        on_gpu = set()
        for analysis in sorted(landed.glob("runs/_code/results/analysis/*.json")):
            target = args.repo / "results" / "analysis" / analysis.name
            # `finish` analyses a run again only where the committed analysis lacks maps: it replaces that
            if not complete_analysis(target):
                shutil.copy(analysis, target)
                on_gpu.add(analysis.stem)
    weights = unpack_parts(args.fetched, "weights", args.repo)
    on_cpu = analyse([run for run in weights if run.name.removesuffix(AGAIN) not in on_gpu], args.repo, args.examples)
    analysed = [f"{run} (on the GPU machine)" for run in sorted(on_gpu)] + [f"{run} (on a CPU)" for run in on_cpu]
    carried = unpack_parts(args.fetched, "checkpoints", args.repo)
    for run in lost:
        if any(path.name == run["run_id"] for path in carried + in_parts):
            run.update(checkpoint="brought back", why=run["why"] + " (checkpoint brought back to resume)")
        elif run["why"] == STILL_TRAINING:
            run.update(checkpoint="lost with the machine")
    any_record = records_landed[0] if records_landed else {}
    atomic_write_json(log_path, dict(
        date=args.date, device=f"{args.device or any_record.get('device', 'not recorded')} (one, lent)",
        git_commit=args.git_commit or any_record.get("git_commit", "not recorded"), profile="paper",
        script=args.script,
        sharing=args.sharing, deadline_minutes=args.deadline_minutes,
        machine_held_minutes=args.held_minutes, finished=finished, lost_runs=lost, not_started=never_started,
        analysed=analysed,
        seconds_per_epoch_is="the steady rate: the run's wall clock over its epochs after the first (which "
                             "compiles), evaluation included; job_minutes is the job's own wall time",
        **({"note": args.note} if args.note else {})))
    print(f"{len(finished)} records landed, {len(lost)} runs lost, {len(analysed)} analysed; wrote {log_path}")
    for line in conflicts:
        print(f"not landed: {line}", file=sys.stderr)
    if carried:
        print("to resume, carry: " + json.dumps([str(path.relative_to(args.repo)) for path in carried]))
    if in_parts:
        print("to resume the run folders too large to carry in one call: python scripts/transfer.py split "
              f"incoming {' '.join(str(path.relative_to(args.repo)) for path in in_parts)} --part-bytes "
              "55000000, then one `gpu_paper_batch.sh receive` call a part before `start`")
    return 1 if conflicts else 0


def complete_analysis(path: Path) -> bool:
    """Whether a committed analysis exists at `path` with the attention maps of MAP_EXAMPLES examples."""
    return path.exists() and has_all_maps(json.loads(path.read_text()))


def analyse(run_dirs: list[Path], repo: Path, examples: int) -> list[str]:
    from rtlib.analysis import analyze_run

    done = []
    for run_dir in run_dirs:
        out = repo / "results" / "analysis" / f"{run_dir.name.removesuffix(AGAIN)}.json"
        # batch am's `finish`, on batch al's warm machine, shipped the weights al had analysed on the
        # GPU again (its tree's analysis still lacked the maps): a complete analysis stays
        if complete_analysis(out):
            continue
        if (run_dir / "record.json").exists() and (run_dir / "best.pt").exists():
            done.append(analyze_run(run_dir, out, device="cpu", examples=examples)["run_id"])
    return done


if __name__ == "__main__":
    raise SystemExit(main())
