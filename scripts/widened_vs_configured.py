"""A widened recurrent row (`rtlib.padding`) against its configured width, on a CPU in fp32:
the losses of one short epoch at each lr asked for. The GPU test of the widened rows
(tests/test_engine_on_gpu.py) compares the same; this tells a padding error from rounding that
an unstable lr amplifies, without a GPU.

    python scripts/widened_vs_configured.py --task ptb-word --model gru --lrs 20 1 \
        --out results/diagnostics/ptb-word_gru_widened_vs_configured_cpu_fp32.jsonl
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rtlib.configs import MODELS, TASKS, run_config, with_variant
from rtlib.runtime import Runtime
from rtlib.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--model", required=True, choices=MODELS)
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True, help="a JSONL file, one line per (lr, width)")
    args = parser.parse_args(argv)
    lines = []
    for lr in args.lrs:
        cfg = run_config(args.task, args.model, "paper", epochs=1, max_steps=args.steps, precision="fp32",
                         eval_limit=4000, lr=lr)
        cfg = with_variant(cfg, "dropout=0,emb_dropout=0")  # the two widths draw other dropout masks
        for pad in ("on", "off"):
            with tempfile.TemporaryDirectory() as folder:
                record = train(cfg, Path(folder), Runtime(device="cpu", pad_hidden=pad), log=lambda message: None)
            losses = {key: record["curve"][0][key] for key in ("train_loss", "valid_loss", "test_loss")}
            lines.append(dict(task=args.task, model=args.model, lr=lr, steps=args.steps, precision="fp32",
                              hidden_width=record["engine"].get("hidden_width", cfg.backbone.hidden_size), **losses))
            print(json.dumps(lines[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_suffix(".partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    partial.replace(args.out)  # written whole, or not at all
    return 0


if __name__ == "__main__":
    sys.exit(main())
