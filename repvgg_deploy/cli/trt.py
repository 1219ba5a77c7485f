"""``repvgg-trt``: verify ONNX graphs, build TensorRT engines, inspect them, run them on images.

Order of checks in ``build``, ``inspect`` and ``run`` (docs/tensorrt.md): arguments and files
first (bad flags, missing or unreadable inputs, read-only output folder, truncated or foreign
engine files, images that are not images), then TensorRT and the GPU (one line naming what is
missing and how to get it), then the engine JSON's TensorRT version and GPU against this
machine's, then the work. Every failure is one ``repvgg-trt: error:`` line (a parser failure
adds one line per ONNX node) and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..errors import UserError
from ..utils.io import existing_file
from .common import positive_int, run_main

PROG = "repvgg-trt"
CALIB_METHODS = ("minmax", "entropy", "percentile")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="RepVGG deployment on TensorRT 10/11: verify ONNX graphs, build, inspect and run engines.",
        epilog="Examples:\n"
               "  repvgg-trt verify models/repvgg-a0.onnx\n"
               "  repvgg-trt build models/repvgg-a0.onnx --fp16 --batch 1:32:256 --timing-cache engines/timing.cache\n"
               "  repvgg-trt inspect engines/repvgg-a0-fp16.engine\n"
               "  repvgg-trt run engines/repvgg-a0-fp16.engine --images a.jpg b.jpg --topk 5",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    v = sub.add_parser("verify", help="prove that an ONNX file's body is only 3x3 Conv + Relu",
                       description="Exit 0 and one line when the body is plain; exit 1 and the offending nodes otherwise.")
    v.add_argument("onnx", nargs="+", help="ONNX file(s)")
    v.add_argument("--json", action="store_true", help="print one JSON object per file instead of text")
    v.add_argument("--no-fold", action="store_true", help="do not fold constants before checking")

    b = sub.add_parser(
        "build", help="build a TensorRT engine from an ONNX file (needs TensorRT and a GPU)",
        description="Build a strongly typed engine: the precision is the ONNX's (FP32, FP16 ONNX, or Q/DQ INT8 "
                    "ONNX). --fp16/--int8 first write that ONNX beside the source. Writes the engine and "
                    "<engine>.json (TensorRT version, GPU, precision, profile, ONNX sha256 and metadata).")
    b.add_argument("onnx", help="ONNX file (repvgg-export output, or any single-input image classifier)")
    b.add_argument("-o", "--output", help="engine path (default: engines/<onnx stem>.engine)")
    prec = b.add_mutually_exclusive_group()
    prec.add_argument("--fp16", action="store_true", help="convert to <stem>-fp16.onnx first, build that")
    prec.add_argument("--int8", action="store_true", help="quantize to <stem>-int8.onnx (Q/DQ) first, build that; needs --calib")
    b.add_argument("--calib", metavar="SPEC", help="calibration data for --int8 (see repvgg_deploy.quantize)")
    b.add_argument("--calib-images", type=positive_int, default=512, metavar="N", help="calibration images (default 512)")
    b.add_argument("--calib-method", choices=CALIB_METHODS, default="percentile", help="activation range method (default percentile, 99.99)")
    b.add_argument("--data-dir", help="data folder for --calib (default: the quantize module's)")
    b.add_argument("--batch", metavar="MIN:OPT:MAX|N",
                   help="optimization profile of the batch axis, e.g. 1:32:256, or a fixed batch, e.g. 8 "
                        "(default: the ONNX's static batch, or 1:32:256 for a dynamic one)")
    b.add_argument("--workspace", metavar="SIZE", help="workspace memory limit, e.g. 4G or 512M (default: TensorRT's)")
    b.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help="builder optimization level (default 3; higher builds slower, may run faster)")
    b.add_argument("--timing-cache", metavar="PATH", help="timing cache to read and update (written atomically)")
    b.add_argument("--no-tf32", action="store_true", help="exact FP32: no TF32 tensor cores for FP32 layers")
    b.add_argument("--no-verify", action="store_true", help="skip the plain-body check of RepVGG ONNX files")
    b.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")
    b.add_argument("-v", "--verbose", action="store_true", help="show TensorRT's INFO messages")
    b.add_argument("-q", "--quiet", action="store_true", help="print only the engine path")

    i = sub.add_parser("inspect", help="layers, precisions, tactics, I/O and profiles of an engine",
                       description="Needs TensorRT and a GPU (the engine is deserialized).")
    i.add_argument("engine", help="engine file")
    i.add_argument("--json", action="store_true", help="print one JSON object (with the raw inspector output)")
    i.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")

    r = sub.add_parser("run", help="classify images with an engine (top-k)",
                       description="Pre-processing from the ONNX metadata in the engine JSON: resize, center crop, "
                                   "normalize (grayscale when in_chans is 1).")
    r.add_argument("engine", help="engine file (with its .engine.json for the pre-processing)")
    r.add_argument("--images", nargs="+", required=True, metavar="IMAGE", help="image files")
    r.add_argument("--topk", type=positive_int, default=5, help="classes per image (default 5)")
    r.add_argument("--labels", help="class names, one per line (default: the metadata's class_names)")
    r.add_argument("--crop-pct", type=float, default=None,
                   help="resize to img_size/crop_pct before the center crop (default: metadata's crop_pct, "
                        "else 0.875 for >= 64 px, 1.0 below)")
    r.add_argument("--json", action="store_true", help="print one JSON object per image")
    r.add_argument("--device", type=int, default=0, help="CUDA device (default 0)")
    return p


# --------------------------------------------------------------------------- verify

def cmd_verify(args: argparse.Namespace) -> int:
    from ..verify import verify_onnx

    status = 0
    for path in args.onnx:
        result = verify_onnx(path, fold_constants=not args.no_fold)
        if args.json:
            print(json.dumps({"path": path, **result.to_dict()}))
        else:
            print(result.summary)
            for offence in result.offences:
                print(f"  {offence}")
        if not result.ok:
            status = 1
    return status


# --------------------------------------------------------------------------- build

def _derived_onnx(args: argparse.Namespace, src: Path, log) -> Path:
    """With --fp16/--int8: write <stem>-fp16.onnx / <stem>-int8.onnx beside the source and return it."""
    if not (args.fp16 or args.int8):
        return src
    want = "fp16" if args.fp16 else "int8"
    try:
        from ..quantize import to_fp16_onnx, to_int8_onnx
    except ImportError as e:
        raise UserError(f"--{want} needs repvgg_deploy.quantize, which this installation lacks ({e})") from None
    dst = src.with_name(f"{src.stem}-{want}.onnx")
    log(f"writing {dst} ...")
    if args.fp16:
        return Path(to_fp16_onnx(src, dst))
    return Path(to_int8_onnx(src, dst, calib=args.calib, calib_images=args.calib_images,
                             method=args.calib_method, data_dir=args.data_dir))


def cmd_build(args: argparse.Namespace) -> int:
    from ..build import BuildConfig, build_engine
    from ..build.builder import format_bytes
    from ..utils.io import check_writable_dir

    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
    # Flags first: cheap, and they name the flag.
    if args.int8 and not args.calib:
        raise UserError("--int8 needs --calib SPEC (the calibration data for the INT8 scales)")
    if args.calib and not args.int8:
        raise UserError("--calib is only used with --int8")
    config = BuildConfig(batch=args.batch, workspace=args.workspace, opt_level=args.opt_level,
                         timing_cache=args.timing_cache, verify=not args.no_verify, tf32=not args.no_tf32, verbose=args.verbose,
                         device=args.device).validate()
    src = existing_file(args.onnx, "ONNX file", "an ONNX file")
    suffix = "-fp16" if args.fp16 else "-int8" if args.int8 else ""
    if args.output:
        out = Path(args.output)
    else:
        out = Path("engines") / f"{src.stem}{suffix}.engine"
        out.parent.mkdir(parents=True, exist_ok=True)
    check_writable_dir(out)
    if args.fp16 or args.int8:
        # The FP32 source gets every file check of a build, then TensorRT and the GPU are checked:
        # all before the (slow) conversion, not after it.
        from ..backend.trt.env import import_tensorrt, require_cuda
        from ..build import precheck_onnx

        precision = precheck_onnx(src, out, config).precision
        if precision != "fp32":
            raise UserError(f"{src} is already {precision}; {suffix.replace('-', '--')} converts an FP32 ONNX "
                            f"(build this one without it)")
        check_writable_dir(src.with_name(f"{src.stem}{suffix}.onnx"))
        import_tensorrt()
        require_cuda(args.device)
    onnx_path = _derived_onnx(args, src, log)
    meta = build_engine(onnx_path, out, config, log=log)
    prof = meta.profile
    shapes = (f"batch {prof['min'][0]}:{prof['opt'][0]}:{prof['max'][0]}" if prof else "static shapes")
    gpu = meta.gpu or {}
    log(f"built {out} ({meta.engine_bytes / 1e6:.1f} MB, {meta.precision}, {shapes}, workspace "
        f"{format_bytes(meta.build.get('workspace_bytes'))}, opt level {meta.build.get('opt_level')}) in "
        f"{meta.build['seconds']:.1f} s with TensorRT {meta.tensorrt['version']} on {gpu.get('name')} ({gpu.get('sm')})")
    print(out)
    return 0


# --------------------------------------------------------------------------- inspect / run

def cmd_inspect(args: argparse.Namespace) -> int:
    from ..backend.trt.inspector import format_report, inspect_engine
    from ..backend.trt.loader import load_engine

    loaded = load_engine(args.engine, device=args.device)  # file checks, then TensorRT, then compat
    info = inspect_engine(loaded)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        print(format_report(info))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..backend.trt.loader import precheck_engine
    from ..utils.images import preprocess_files, read_labels, topk

    if args.crop_pct is not None and not 0 < args.crop_pct <= 1:
        raise UserError(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
    meta = precheck_engine(args.engine)
    metadata = meta.onnx_metadata if meta else {}
    if not metadata:
        print(f"note: no ONNX metadata for {args.engine} (missing .engine.json): assuming 224 px RGB with "
              "ImageNet mean/std", file=sys.stderr)
    num_classes = metadata.get("num_classes")
    class_names = read_labels(args.labels, num_classes) if args.labels else metadata.get("class_names")
    batch = preprocess_files(args.images, metadata, crop_pct=args.crop_pct)  # images checked before TensorRT

    from ..backend.trt.runner import TrtRunner

    runner = TrtRunner(args.engine, device=args.device)
    expected = tuple(runner.input_shape[1:])
    if tuple(batch.shape[1:]) != expected:
        raise UserError(f"pre-processed images are {tuple(batch.shape[1:])} but the engine takes {expected}; "
                        "the engine JSON's ONNX metadata (img_size, in_chans) does not fit the engine")
    logits = runner(batch)
    for path, best in zip(args.images, topk(logits, args.topk, class_names)):
        if args.json:
            print(json.dumps({"image": str(path), "topk": best}))
        else:
            print(f"{path}:")
            for rank, entry in enumerate(best, 1):
                print(f"  {rank}. {entry['name']:<24} {entry['prob'] * 100:6.2f}%  (class {entry['index']})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return {"verify": cmd_verify, "build": cmd_build, "inspect": cmd_inspect, "run": cmd_run}[args.command](args)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())
