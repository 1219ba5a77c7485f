"""``repvgg-pipeline``: the whole pipeline on Fashion-MNIST, end to end, with one report."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .common import positive_int, run_main

PROG = "repvgg-pipeline"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Train RepVGG-A0 and QARepVGG-A0 on Fashion-MNIST, export FP32/FP16/INT8 ONNX, verify, build "
                    "TensorRT engines when possible, measure accuracy and speed, and write one report.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="run folder (default runs/pipeline)")
    p.add_argument("--full", action="store_true",
                   help="the long schedule instead of the short one: 50 epochs at 64x64 (Nesterov SGD, wd 5e-4, "
                        "random erasing 0.5, EMA 0.9995), channels-last, bf16 where the CPU computes it natively (or "
                        "on a GPU); hours per model on a 2-core CPU")
    p.add_argument("--fresh", action="store_true", help="start over: delete the run folder first, if the pipeline made it (default: reuse what is there)")
    p.add_argument("--data-dir", help="folder with Fashion-MNIST's IDX .gz files (default: /usr/share/datasets/fashion-mnist)")
    p.add_argument("--epochs", type=positive_int, help="override the schedule's epochs")
    p.add_argument("--calib-images", type=positive_int, default=512, help="INT8 calibration images (default 512)")
    p.add_argument("--subset", type=positive_int, help="train on the first N training images (quick tries)")
    p.add_argument("--eval-limit", type=positive_int, help="evaluate on the first N test images")
    p.add_argument("--no-bench", action="store_true", help="skip the speed measurements")
    p.add_argument("--threads", type=positive_int, help="CPU threads of each training, evaluation and benchmark command")
    p.add_argument("--jobs", type=positive_int,
                   help="training and evaluation commands run at once (default: 2 on a CPU with 2+ cores, each with "
                        "half the cores, or with --threads T as many as cores // T, at most 2; 1 with a GPU)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..pipeline import PipelineConfig, run_pipeline

    args = build_parser().parse_args(argv)
    cfg = PipelineConfig(out=args.out, full=args.full, fresh=args.fresh, data_dir=args.data_dir,
                         calib_images=args.calib_images, bench=not args.no_bench, threads=args.threads, jobs=args.jobs,
                         subset=args.subset, eval_limit=args.eval_limit,
                         schedule={"epochs": args.epochs} if args.epochs else {})
    run_pipeline(cfg)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())
