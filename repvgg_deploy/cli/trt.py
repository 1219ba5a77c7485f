"""``repvgg-trt``: plain-body verification of ONNX files (and, with TensorRT, engines)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .common import run_main

PROG = "repvgg-trt"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="RepVGG deployment on TensorRT: verify ONNX graphs.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    v = sub.add_parser("verify", help="prove that an ONNX file's body is only 3x3 Conv + Relu",
                       description="Exit 0 and one line when the body is plain; exit 1 and the offending nodes otherwise.")
    v.add_argument("onnx", nargs="+", help="ONNX file(s)")
    v.add_argument("--json", action="store_true", help="print one JSON object per file instead of text")
    v.add_argument("--no-fold", action="store_true", help="do not fold constants before checking")
    return p


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return {"verify": cmd_verify}[args.command](args)


def cli(argv: Optional[Sequence[str]] = None) -> int:
    return run_main(main, PROG, argv)


if __name__ == "__main__":
    sys.exit(cli())
