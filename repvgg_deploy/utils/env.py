"""What the machine and the libraries are: recorded beside every artifact and figure."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import shutil
import subprocess
from typing import Dict, FrozenSet, Iterable, Optional

__all__ = ["versions", "cpu_model", "cpu_flags", "cpu_bf16_native", "cpu_int8_saturates", "cxx_compiler", "lscpu_model", "loadavg", "environment", "now_iso"]

_PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "onnx-graphsurgeon", "onnxscript",
             "numpy", "tensorrt", "cuda-python", "repvgg-deploy")


def versions(packages=_PACKAGES) -> Dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> FrozenSet[str]:
    """The instruction-set flags of ``/proc/cpuinfo`` (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_native(flags: Optional[Iterable[str]] = None) -> bool:
    """Whether the CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16).

    Without it PyTorch emulates bf16 autocast on the CPU: correct, but many times slower than
    FP32 (RepVGG-A0 training on an AVX2-only AMD EPYC: 15 images/s in bf16 against 177 in
    FP32, both at 48x48 with channels-last). ``flags`` defaults to this machine's :func:`cpu_flags`; where those are unknown
    (not Linux) PyTorch's own check answers.
    """
    f = frozenset(cpu_flags() if flags is None else flags)
    if f:
        return bool(f & {"avx512_bf16", "amx_bf16"})
    try:
        import torch.cpu

        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except Exception:
        return False


def cpu_int8_saturates(flags: Optional[Iterable[str]] = None, machine: Optional[str] = None) -> bool:
    """Whether ONNX Runtime's fast u8s8 int8 kernels can saturate on this CPU: x86-64 without VNNI.

    There they multiply with ``vpmaddubsw``, which adds two u8 x s8 products into a saturating
    int16; VNNI (AVX512-VNNI, AVX-VNNI) and AMX-INT8 accumulate in int32 and cannot overflow.
    Measured on an AVX2-only EPYC: a short-schedule QARepVGG-A0 in Q/DQ INT8 scored 70.52 % with
    those kernels, 78.45 % with ONNX Runtime's ``session.x64quantprecision`` (u8u8 kernels) and
    78.37 % in FP32 (docs/results/pipeline-avx2.md). Not x86, or flags unknown: False.
    """
    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False
    f = frozenset(cpu_flags() if flags is None else flags)
    if not f:
        return False
    return not (f & {"avx512_vnni", "avx_vnni", "amx_int8"})


def cxx_compiler() -> Optional[str]:
    """The C++ compiler ``torch.compile`` would build CPU kernels with (``$CXX``, else g++, c++ or clang++ on the
    PATH), or None: without one, TorchInductor fails on its first CPU kernel."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    for name in ("g++", "c++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def lscpu_model() -> str:
    """lscpu's model name, family and model (a VM may show only a vendor name) and hypervisor, for benchmark notes."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return cpu_model()
    f = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
    text = f"{f.get('Model name', '?')} (family {f.get('CPU family', '?')}, model {f.get('Model', '?')})"
    if f.get("Hypervisor vendor"):
        text += f", {f['Hypervisor vendor']} VM"
    return text


def loadavg() -> str:
    """The 1/5/15-minute load averages, as ``a / b / c``."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def gpu_info() -> Optional[Dict[str, str]]:
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        p = torch.cuda.get_device_properties(0)
        return {
            "name": p.name,
            "compute_capability": f"{p.major}.{p.minor}",
            "memory_gib": f"{p.total_memory / 2**30:.1f}",
            "cuda": str(torch.version.cuda),
            "driver": _driver_version() or "unknown",
        }
    except Exception:
        return None


def _driver_version() -> Optional[str]:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except Exception:
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def environment() -> Dict[str, object]:
    return {
        "date": now_iso(),
        "host": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_info(),
        "versions": versions(),
    }
