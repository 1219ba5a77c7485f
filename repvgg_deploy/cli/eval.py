"""``repvgg-eval``: top-1/top-5 of a checkpoint or an exported ONNX file on a data set's test split."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from .common import add_ort_int8_arg, nonneg_int, positive_int, run_main, x64_quant_precision

PROG = "repvgg-eval"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Accuracy of a checkpoint (PyTorch) or an .onnx file (ONNX Runtime, CPU) on a validation set.",
        epilog=(
            "Examples:\n"
            "  repvgg-eval runs/a0/best.pth --arch A0 --data fashion-mnist\n"
            "  repvgg-eval models/repvgg-a0.onnx --data fashion-mnist --json\n"
            "  repvgg-eval runs/a0/best.pth --compare-with models/repvgg-a0.onnx --min-agreement 0.999\n"
            "  repvgg-eval models/repvgg-a0.onnx --save-predictions fp32.json     # once ...\n"
            "  repvgg-eval models/repvgg-a0-int8.onnx --compare-with fp32.json    # ... then compare without re-running it"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", help="checkpoint (.pth/.pt/.safetensors, any layout repvgg-export reads) or .onnx file")
    p.add_argument("--data", default=None,
                   help="fashion-mnist, cifar10, fake or an ImageFolder root (default: the data set the file records)")
    p.add_argument("--data-dir", default=None, help="where to look for fashion-mnist / cifar10 first")
    p.add_argument("--download", action="store_true", help="download the data set with torchvision if it is not found")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N test images")
    p.add_argument("--img-size", type=positive_int, default=None, help="input size (default: the file's, else the data set's)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader workers for folders (default 0)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--arch", default=None, help="expected arch; a checkpoint of another arch is an error")
    g.add_argument("--use-ema", action="store_true", help="evaluate the EMA weights of a last.pth")
    g.add_argument("--fuse", action="store_true", help="evaluate the re-parameterized (deploy) form")
    g.add_argument("--recalibrate-bn", type=nonneg_int, default=0, metavar="N",
                   help="first recompute the BatchNorm statistics over N augmented training batches, as repvgg-train "
                        "does for its EMA model (use with --use-ema on a last.pth; default 0: off)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    o = p.add_argument_group("ONNX")
    o.add_argument("--threads", type=positive_int, default=None, help="ONNX Runtime intra-op threads (default: one per core)")
    add_ort_int8_arg(o)
    c = p.add_argument_group("comparison")
    c.add_argument("--compare-with", default=None, metavar="OTHER",
                   help="also evaluate OTHER (checkpoint or .onnx) on the same images and report the fraction of identical "
                        "predictions; OTHER may also be a .json file of --save-predictions, which is read instead of run")
    c.add_argument("--save-predictions", default=None, metavar="FILE",
                   help="write the result with every image's top-1 prediction to FILE (JSON), for a later --compare-with")
    c.add_argument("--min-agreement", type=float, default=None,
                   help="with --compare-with: exit 1 when the agreement is below this fraction (e.g. 0.999)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout (top1 and top5 in percent, n, ...)")
    return p


def _line(r: Dict[str, Any]) -> str:
    what = f"{r.get('arch') or '?'} {r['format']}" + (" (fused)" if r["format"] == "checkpoint" and r.get("fused") else "")
    if r.get("bn_recalibrated_batches"):
        what += f", BN recomputed on {r['bn_recalibrated_batches']} batches"
    if r.get("precision") == "int8" and r.get("int8_target") == "tensorrt":
        what += ", TensorRT Q/DQ: FP32 convs in ONNX Runtime"
    elif r.get("precision") == "int8" and r.get("ort_x64_quant_precision"):
        what += ", u8u8 int8 kernels (x64quantprecision)"
    skipped = f", {r['skipped']} unreadable skipped" if r.get("skipped") else ""
    read = f", read from {r['read_from']}" if r.get("read_from") else ""
    return (f"{r['model']}: top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}  "
            f"(n={r['n']}{skipped}, {r['data']} val {r['img_size']}x{r['img_size']}, {what}, "
            f"{r['seconds']:.1f} s, {r['images_per_s']:.0f} img/s{read})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import UserError
    from ..train.evaluate import evaluate, load_predictions, prediction_agreement, save_predictions
    from ..utils.io import check_writable_dir, existing_file

    if args.min_agreement is not None and not args.compare_with:
        raise UserError("--min-agreement needs --compare-with")
    saved = None  # --compare-with FILE.json, read before the evaluation: a bad file fails at once
    if args.compare_with and args.compare_with.lower().endswith(".json"):
        saved = {**load_predictions(args.compare_with), "read_from": args.compare_with}
    elif args.compare_with:
        existing_file(args.compare_with, "--compare-with file", "a model file")
    if args.save_predictions:
        if args.compare_with and Path(args.save_predictions).resolve() == Path(args.compare_with).resolve():
            raise UserError(f"--save-predictions and --compare-with name the same file: {args.compare_with}")
        check_writable_dir(args.save_predictions)  # before the evaluation, not after it
    common = dict(data=args.data, data_dir=args.data_dir, download=args.download, batch_size=args.batch_size,
                  limit=args.limit, img_size=args.img_size, workers=args.workers, threads=args.threads,
                  x64_quant_precision=x64_quant_precision(args), device=args.device,
                  return_predictions=bool(args.compare_with or args.save_predictions))
    result = evaluate(args.model, arch=args.arch, use_ema=args.use_ema, fuse=args.fuse,
                      recalibrate_bn=args.recalibrate_bn, **common)
    other = None
    if args.compare_with:
        if saved is not None:
            other = saved
            for k in ("data", "img_size"):
                if other.get(k) != result[k]:
                    raise UserError(f"{args.compare_with} holds predictions for {k} {other.get(k)!r}, {args.model} was "
                                    f"evaluated with {result[k]!r}: not comparable")
        else:
            common["data"] = args.data or result["data"]  # the same images as the first model's
            other = evaluate(args.compare_with, **common)
        if other["n"] != result["n"]:
            raise UserError(f"{args.compare_with} saw {other['n']} images, {args.model} {result['n']}: not comparable")
    if args.save_predictions:  # after the comparison's checks: a failed command saves nothing
        save_predictions(result, args.save_predictions)
    if other is not None:
        result["agreement"] = prediction_agreement(result.pop("predictions"), other.pop("predictions"))
        result["compare"] = other
    else:
        result.pop("predictions", None)
    if args.json:
        print(json.dumps(result))
    else:
        print(_line(result))
        if other is not None:
            print(_line(other))
            print(f"prediction agreement: {100 * result['agreement']:.3f}% of {result['n']} images "
                  f"({round((1 - result['agreement']) * result['n'])} differ)")
    if args.min_agreement is not None and result["agreement"] < args.min_agreement:
        print(f"{PROG}: agreement {result['agreement']:.5f} is below --min-agreement {args.min_agreement}", file=sys.stderr)
        return 1
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())
