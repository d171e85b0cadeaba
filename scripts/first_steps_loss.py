"""The training loss of a paper-profile row's first steps at each lr asked for, averaged over
windows of steps: a cheap look (on a CPU) at whether an lr trains at all before a GPU lease is
spent on it. Not a record: the run stops after --steps and evaluates on a slice.

    python scripts/first_steps_loss.py --task ptb-word --model gru --lrs 20 4 --steps 150 \
        --out results/diagnostics/ptb-word_gru_paper_first_steps_cpu_fp32.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from rtlib.configs import MODELS, TASKS, run_config
from rtlib.runtime import Runtime
from rtlib.train import Callback, train


class WindowLosses(Callback):
    """The mean training loss of every `every` steps. The engine sums the loss on the device and
    writes the sums to its state at a checkpoint, which this hook asks for every `every` steps;
    so at step k it reads the window that ended at step k - `every`."""

    def __init__(self, every: int):
        self.every, self.last, self.windows = every, (0.0, 0.0), []

    def step_end(self, state) -> bool:
        if state.global_step % self.every:
            return False
        loss, count = state.train_loss_sum - self.last[0], state.train_count - self.last[1]
        if count:
            self.windows.append(dict(steps=[state.global_step - 2 * self.every + 1, state.global_step - self.every],
                                     train_loss=loss / count))
        self.last = (state.train_loss_sum, state.train_count)
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1111)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, required=True, help="a JSONL file, one line per lr")
    args = parser.parse_args(argv)
    if args.steps < 2 * args.every:
        parser.error(f"--steps {args.steps} is fewer than two windows of --every {args.every}")
    lines = []
    for lr in args.lrs:
        cfg = run_config(args.task, args.model, "paper", epochs=1, max_steps=args.steps, precision="fp32",
                         eval_limit=2000, lr=lr, seed=args.seed)
        hook, began = WindowLosses(args.every), time.monotonic()
        with tempfile.TemporaryDirectory() as folder:
            train(cfg, Path(folder), Runtime(device=args.device), callbacks=[hook], log=lambda message: None)
        lines.append(dict(task=args.task, model=args.model, lr=lr, seed=args.seed, precision="fp32",
                          device=args.device, steps=args.steps, seconds=round(time.monotonic() - began),
                          windows=hook.windows))
        print(json.dumps(lines[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(args.out)  # written whole, or not at all
    return 0


if __name__ == "__main__":
    sys.exit(main())
