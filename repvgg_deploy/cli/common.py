"""Shared argument groups and the error convention of every CLI.

Bad input raises :class:`~repvgg_deploy.errors.UserError`; :func:`run_main` prints it as one
line (``prog: error: message``) on stderr and exits with code 2. An ``OSError`` that no check
caught first (a file that cannot be read, a folder that cannot be made) is one such line too,
naming the file. Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, List, Optional, Sequence

from ..errors import UserError

__all__ = ["run_main", "describe_os_error", "add_model_args", "add_export_args", "parse_floats", "parse_ints",
           "positive_int"]


def run_main(main: Callable[[Optional[Sequence[str]]], int], prog: str, argv: Optional[Sequence[str]] = None) -> int:
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:
        print(f"{prog}: error: {describe_os_error(e)}", file=sys.stderr)
        return 2


def describe_os_error(e: OSError) -> str:
    """``runs/a0/last.pth: Permission denied``: an ``OSError`` as the file it is about and why."""
    what = (e.strerror or str(e) or type(e).__name__).splitlines()[0]
    if e.filename is None:
        return what
    names = str(e.filename) + (f" -> {e.filename2}" if getattr(e, "filename2", None) else "")
    return f"{names}: {what}"


def _number(text: str, kind: type, low: float, strict: bool = False):
    """``kind(text)`` for argparse, >= low (> low when strict), else a one-line argparse error."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
    if value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1)


def nonneg_int(text: str) -> int:
    return _number(text, int, 0)


def nonneg_float(text: str) -> float:
    return _number(text, float, 0)


def positive_float(text: str) -> float:
    return _number(text, float, 0, strict=True)


def probability(text: str) -> float:
    value = _number(text, float, 0)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be <= 1, got {value}")
    return value


def parse_floats(text: str) -> List[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def parse_ints(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need integers >= 1: {text!r}")
    return values


def add_ort_int8_arg(group) -> None:
    """``--x64-quant-precision``, ONNX Runtime's ``session.x64quantprecision``, for commands that run ONNX files."""
    group.add_argument("--x64-quant-precision", choices=("auto", "on", "off"), default="auto",
                       help="ONNX Runtime's u8u8 int8 kernels instead of u8s8, which saturate on x86 CPUs without VNNI "
                            "(auto, the default: on exactly on such CPUs; it changes nothing for FP32/FP16 files)")


def x64_quant_precision(args: argparse.Namespace) -> Optional[bool]:
    """``--x64-quant-precision`` as :func:`~repvgg_deploy.backend.onnxrt.session_from_onnx` takes it (auto: None)."""
    return {"auto": None, "on": True, "off": False}[getattr(args, "x64_quant_precision", "auto")]


def add_model_args(parser: argparse.ArgumentParser, arch_required: bool = False) -> argparse._ArgumentGroup:
    g = parser.add_argument_group("model")
    g.add_argument("--arch", required=arch_required,
                   help="A0 A1 A2 B0 B1 B1g2 B1g4 B2 B2g2 B2g4 B3 B3g2 B3g4 (also RepVGG-A0, repvgg_a0; QA-A0 for QARepVGG)")
    g.add_argument("--num-classes", type=positive_int, default=None,
                   help="classes of the head (default: from the checkpoint, else 1000)")
    g.add_argument("--in-chans", type=positive_int, default=None,
                   help="input channels (default: from the checkpoint, else 3)")
    g.add_argument("--use-ema", action="store_true", help="load the EMA weights of a training checkpoint")
    return g


def opset_arg(text: str) -> int:
    """``--opset``: an integer in the range the exporters write, else a one-line argparse error."""
    from ..export.onnx_export import MIN_OPSET, max_opset

    value = _number(text, int, MIN_OPSET)
    if value > max_opset():
        raise argparse.ArgumentTypeError(f"must be <= {max_opset()} (the newest opset the installed onnx knows), got {value}")
    return value


def add_export_args(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    from ..export.onnx_export import DEFAULT_OPSET, MIN_OPSET

    g = parser.add_argument_group("ONNX")
    g.add_argument("--img-size", type=positive_int, default=None,
                   help="input height and width, a multiple of 32 (default: from the checkpoint, else 224)")
    g.add_argument("--batch", type=positive_int, default=None, help="static batch size (default: dynamic batch axis)")
    g.add_argument("--opset", type=opset_arg, default=DEFAULT_OPSET,
                   help=f"ONNX opset, {MIN_OPSET} or newer (default {DEFAULT_OPSET}: parsed by TensorRT 10 and 11 and ONNX "
                        "Runtime; below 18 the TorchScript exporter writes it)")
    g.add_argument("--mean", type=parse_floats, default=None, help="per-channel mean stored in the metadata, e.g. 0.485,0.456,0.406")
    g.add_argument("--std", type=parse_floats, default=None, help="per-channel std stored in the metadata")
    return g
