"""``repvgg-export``: checkpoint -> fused, verified ONNX (+ JSON report)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..models.config import ARCHS, resolve_arch
from ..models.repvgg import create_model, model_default_cfg
from ..quantize.int8 import TARGETS
from .common import add_export_args, add_model_args, positive_int, run_main

PROG = "repvgg-export"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse a RepVGG checkpoint into plain 3x3 convs and export one verified ONNX file.",
        epilog="Examples:\n  repvgg-export --arch B2 ckpt.pth\n  repvgg-export --arch A0 --random-init -o /tmp/a0.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="checkpoint (.pth/.pt/.safetensors): this project's, the official release's or timm's")
    p.add_argument("--random-init", action="store_true", help="no checkpoint: random weights (and random BN statistics)")
    p.add_argument("-o", "--output", help="ONNX path (default: models/<arch>[-precision].onnx); the report goes beside it as .json")
    add_model_args(p)
    add_export_args(p)
    g = p.add_argument_group("precision (TensorRT 11 takes the precision from the ONNX)")
    g.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32",
                   help="fp16: FP16 weights and compute, FP32 input/output; int8: Q/DQ calibrated on --calib")
    g.add_argument("--calib", help="calibration data for int8: fashion-mnist, cifar10 or an ImageFolder path (as repvgg-train --data)")
    g.add_argument("--calib-images", type=int, default=512, help="calibration images (default 512)")
    g.add_argument("--calib-method", default="percentile", help="percentile (default), minmax or entropy")
    g.add_argument("--int8-target", choices=TARGETS, default="tensorrt",
                   help="where --precision int8 puts the activation Q/DQ: tensorrt (the default; the inputs of each "
                        "Conv, TensorRT's placement) or onnxruntime (also each Conv output, which ONNX Runtime's CPU "
                        "fuses into int8 QLinearConv kernels)")
    g.add_argument("--calib-percentile", type=float, default=99.99, help="percentile of |activation| kept by --calib-method percentile (default 99.99)")
    g.add_argument("--data-dir", help="where the calibration data set lives (see repvgg-train --data-dir)")
    g = p.add_argument_group("checks")
    g.add_argument("--rtol", type=float, default=None, help="max ONNX Runtime error relative to the output scale (default 1e-4 for FP32)")
    g.add_argument("--compare-batch", type=positive_int, default=4, help="random inputs for the ONNX Runtime comparison (default 4)")
    g.add_argument("--seed", type=int, default=0, help="seed of --random-init and of the comparison inputs")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the output path")
    return p


def randomize_bn_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms, so that fusion is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..export import export_with_report

    if args.checkpoint and args.random_init:
        raise UserError("give a checkpoint or --random-init, not both")
    if not args.checkpoint and not args.random_init:
        raise UserError("no checkpoint given (pass a checkpoint file, or --random-init with --arch)")
    arch = resolve_arch(args.arch) if args.arch else None
    from ..quantize.int8 import INT8_MIN_OPSET
    from ..quantize.transform import precision_transform

    if args.precision == "int8" and args.opset < INT8_MIN_OPSET:
        raise UserError(f"--precision int8 needs --opset {INT8_MIN_OPSET} or newer (per-channel Q/DQ), got {args.opset}")

    transform, comparison_images = precision_transform(
        args.precision, calib=args.calib, calib_images=args.calib_images, calib_method=args.calib_method, calib_percentile=args.calib_percentile,
        data_dir=args.data_dir, seed=args.seed, int8_target=args.int8_target, warn=lambda m: print(f"{PROG}: warning: {m}", file=sys.stderr))

    if args.random_init:
        if arch is None:
            raise UserError("--random-init needs --arch")
        torch.manual_seed(args.seed)
        model = create_model(arch, num_classes=args.num_classes or 1000, in_chans=args.in_chans or 3)
        randomize_bn_(model, args.seed).eval()
        cfg = model_default_cfg(model)
        checkpoint = None
    else:
        model = load_checkpoint(args.checkpoint, arch=arch, num_classes=args.num_classes,
                                in_chans=args.in_chans, use_ema=args.use_ema)
        cfg = dict(model.pretrained_cfg)
        checkpoint = args.checkpoint
    img_size = args.img_size or int(cfg.get("img_size") or 224)
    mean = args.mean or cfg["mean"]
    std = args.std or cfg["std"]
    for name, values in (("--mean", mean), ("--std", std)):
        if len(values) != model.in_chans:
            raise UserError(f"{name} has {len(values)} values but the model takes {model.in_chans} channels")

    if args.output:
        out = Path(args.output)
    else:
        suffix = "" if args.precision == "fp32" else f"-{args.precision}"
        out = Path("models") / f"{ARCHS[model.arch].slug}{suffix}.onnx"
        out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix != ".onnx":
        raise UserError(f"output must end in .onnx: {out}")
    metadata = {"mean": list(mean), "std": list(std)}
    for key in ("class_names", "dataset"):
        if cfg.get(key) is not None:
            metadata[key] = cfg[key]
    if checkpoint:
        metadata["source_sha256"] = cfg.get("sha256")

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    compare_inputs = comparison_images((model.in_chans, img_size, img_size), mean, std) if comparison_images else None
    result = export_with_report(
        model, out, img_size=img_size, batch=args.batch, opset=args.opset, metadata=metadata,
        checkpoint=checkpoint, compare_batch=args.compare_batch, rtol=args.rtol, seed=args.seed, log=log,
        transform=transform, precision=args.precision, compare_inputs=compare_inputs,
    )
    t = result.report["timings"]
    log(f"wrote {result.onnx_path} ({result.report['onnx_bytes'] / 1e6:.1f} MB) and {result.report_path} "
        f"in {sum(t.values()):.1f} s")
    print(result.onnx_path)
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())
