#!/usr/bin/env python3
"""Print a run's metrics.jsonl as the Markdown table of docs/results/training-cpu.md.

    python tools/training_table.py runs/a0-e120/metrics.jsonl [--every 10]

Rows: epochs 1 and 5, every ``--every``-th epoch, and the last one; then a one-line summary
(epochs, wall time as the sum of the epochs' seconds, median training images/s, best top-1).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", type=Path, help="a run's metrics.jsonl")
    p.add_argument("--every", type=int, default=10, help="one row every N epochs (default 10)")
    args = p.parse_args(argv)
    try:
        rows = [json.loads(line) for line in args.metrics.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        print(f"training_table.py: error: {args.metrics}: {e}", file=sys.stderr)
        return 2
    if not rows:
        print(f"training_table.py: error: {args.metrics} has no epochs", file=sys.stderr)
        return 2
    ema = "val_top1_raw" in rows[-1]
    head = ["epoch", "lr", "train acc", "EMA test top-1" if ema else "test top-1"]
    head += ["raw (non-EMA) test top-1"] if ema else []
    print("| " + " | ".join(head + ["images/s"]) + " |")
    print("|" + " --- |" * (len(head) + 1))
    for r in rows:
        if r["epoch"] in (1, 5) or r["epoch"] % args.every == 0 or r is rows[-1]:
            cells = [str(r["epoch"]), f"{r['lr']:.4f}", f"{r['train_acc']:.2f}", f"{r['val_top1']:.2f}"]
            cells += [f"{r['val_top1_raw']:.2f}"] if ema else []
            print("| " + " | ".join(cells + [f"{r['images_per_s']:.0f}"]) + " |")
    best = max(rows, key=lambda r: r["val_top1"])
    line = (f"\nepochs: {rows[-1]['epoch']}; wall {sum(r['seconds'] for r in rows) / 60:.1f} min (sum of epochs); "
            f"median {statistics.median(r['images_per_s'] for r in rows):.0f} images/s; "
            f"best test top-1 {best['val_top1']:.2f} at epoch {best['epoch']}")
    if ema:
        braw = max(rows, key=lambda r: r["val_top1_raw"])
        line += f"; best raw {braw['val_top1_raw']:.2f} at epoch {braw['epoch']}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
