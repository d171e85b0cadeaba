"""Command line: `python -m rtlib {train,reproduce,bench,analyze,data} ...`.

Bad values exit with code 2 and one line naming the value and the allowed ones; so do the
documented errors (`expected_errors`: data, checksum, non-finite loss, I/O, run folder,
checkpoint, record). Any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import OneLineParser
from .paths import RECORDS_DIR



def default_results_dir(profile: str) -> Path:
    return RECORDS_DIR / profile


def folder(text: str) -> Path:
    """A folder argument; an empty one would mean the current folder, never what was meant."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder: give a path")
    return Path(text)


def add_train_parser(commands) -> None:
    from .configs import MODELS, PROFILES, TASKS

    parser = commands.add_parser("train", help="train one model on one task")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--profile", default="smoke", choices=PROFILES)
    parser.add_argument("--lr", type=float, help="learning rate (default: the config's)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--variant", default="", help="ablation, e.g. norm=post or window=3")
    parser.add_argument("--out", type=folder, help="run folder (default runs/<run id>)")
    parser.add_argument("--results", type=folder, help="folder for the record copy "
                                                     "(default results/records/<profile>)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    add_compile_argument(parser)
    parser.add_argument("--max-minutes", type=float, help="stop (checkpointed) after this long")
    parser.add_argument("--data-dir", type=folder)
    parser.add_argument("--progress", action="store_true", help="progress bars even without a TTY")


def add_compile_argument(parser) -> None:
    from .runtime import COMPILE_MODES
    parser.add_argument("--compile", default="auto", choices=COMPILE_MODES,
                        help="engine mode on CUDA (default auto: the model's fastest measured mode); "
                             "not part of the run's identity")


def run_train(args: argparse.Namespace) -> int:
    from .run import prepare_run, run_one
    cfg, out = prepare_run(args.task, args.model, args.profile, lr=args.lr, seed=args.seed,
                           epochs=args.epochs, variant=args.variant, device=args.device,
                           max_minutes=args.max_minutes, out_dir=args.out)
    results = args.results or default_results_dir(args.profile)
    record = run_one(cfg, out, device=args.device, compile_mode=args.compile, max_minutes=args.max_minutes,
                     progress=True if args.progress else None, data_dir=args.data_dir, resume=args.resume,
                     results_dir=results)
    return 0 if record is not None else 3  # 3: stopped by --max-minutes, resumable


def add_reproduce_parser(commands) -> None:
    from .configs import MODELS, PROFILES
    from .reproduce import non_negative_float, parse_cell, parse_gpus, positive_int
    parser = commands.add_parser("reproduce", help="run a table's grid through the run notebook")
    parser.add_argument("--table", nargs="+", choices=["1", "2", "3", "4", "all"],
                        help="one or more tables, run in the order given, or all")
    parser.add_argument("--cells", nargs="+", type=parse_cell, metavar="TABLE:MODEL[:LRS]",
                        help="instead of --table and --models: these cells, in the order given, each "
                             "with its own --lrs if named (e.g. 3:rtransformer:config 2:gru:sweep); "
                             "again:RUN_ID runs a recorded run once more, its record into --repeats")
    parser.add_argument("--models", nargs="+", choices=MODELS, help="default: all six")
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("--seeds", default=1, type=positive_int, help="N seeds: 1111, 1112, ... (default 1)")
    parser.add_argument("--lrs", default="grid", choices=["grid", "config", "sweep"],
                        help="the config's lr grid at every seed (default), only its lr, or sweep: "
                             "the config's lr at every seed, the grid at the first seed, then the "
                             "lr chosen on validation at the other seeds")
    parser.add_argument("--variants", nargs="+", help="ablations, e.g. '' norm=post window=3")
    parser.add_argument("--ablations", action="store_true",
                        help="the sweep's ablations of the tables (rtlib.configs.ABLATIONS): seed "
                             "1111, and seeds 1111-1113 for those a claim is tested against")
    parser.add_argument("--gpus", type=parse_gpus, help="e.g. 0,1,2,3; '' for the CPU "
                                                        "(default: every visible GPU)")
    parser.add_argument("--jobs-per-gpu", type=positive_int, default=1)
    add_compile_argument(parser)
    parser.add_argument("--max-minutes", type=non_negative_float,
                        help="per job: stop (checkpointed, resumable) after this long")
    parser.add_argument("--deadline-minutes", type=non_negative_float,
                        help="the whole batch: jobs stop (checkpointed) before this many minutes "
                             "from now, and none starts in the last minute")
    parser.add_argument("--carry-limit-mb", type=non_negative_float,
                        help="with --deadline-minutes: the most a run folder's weights can weigh "
                             "to leave the machine; a job over it that is projected to miss the "
                             "deadline is stopped, so the jobs beside it get its share of the GPU")
    parser.add_argument("--hold-judgement-while", type=Path, metavar="FILE",
                        help="with --carry-limit-mb: while FILE exists, another process shares the "
                             "GPU for a while (the batch's GPU tests), and no job is stopped or "
                             "skipped for the pace it makes meanwhile; once FILE is gone, every job "
                             "is timed afresh")
    parser.add_argument("--out", type=folder, help="run folders (default runs/)")
    parser.add_argument("--results", type=folder, help="record copies (default results/records/<profile>)")
    parser.add_argument("--notebooks", type=folder, help="stripped notebook copies "
                                                       "(default results/notebooks/<profile>)")
    parser.add_argument("--repeats", type=folder, help="record copies of again: runs, kept apart from "
                                                     "the first runs' (default results/repeats/records/<profile>)")
    parser.add_argument("--data-dir", type=folder)
    parser.add_argument("--plan", action="store_true",
                        help="print the jobs as shell commands (run from the repo root), run nothing")


# commands with their own parser; `data` needs only the standard library (it runs before the install)
DELEGATED = {"bench": "rtlib.bench", "analyze": "rtlib.analysis", "data": "rtlib.data.fetch"}


def expected_errors() -> tuple[type[BaseException], ...]:
    """The errors a user can cause or meet (bad input, data, disk, a diverged run, a run
    folder in use or damaged): one line and exit code 2."""
    from .data import ChecksumError
    from .run_folder import RunFolderError
    from .train import NonFiniteLossError
    return ValueError, OSError, ChecksumError, NonFiniteLossError, RunFolderError


def error_line(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else ""
    try:
        return run_command(argv)
    except expected_errors() as error:
        print(f"rtlib {command}: error: {error_line(error)}", file=sys.stderr)
        return 2


def run_command(argv: list[str]) -> int:
    if argv and argv[0] in DELEGATED:
        import importlib
        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    parser = OneLineParser(prog="rtlib", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_train_parser(commands)
    add_reproduce_parser(commands)
    for name, module in DELEGATED.items():
        commands.add_parser(name, help=f"see `python -m rtlib {name} --help` ({module})")
    args = parser.parse_args(argv)
    if args.command == "train":
        return run_train(args)
    from .reproduce import run_reproduce
    return run_reproduce(args)


if __name__ == "__main__":
    sys.exit(main())
