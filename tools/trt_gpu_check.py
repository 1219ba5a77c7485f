#!/usr/bin/env python3
"""One-command TensorRT check for a GPU machine (no internet needed), in under 5 minutes.

    python tools/trt_gpu_check.py                          # exports random-weight A0 and B2 first
    python tools/trt_gpu_check.py models/a0.onnx models/b2.onnx -o results/trt-gpu-check --calib random

Reports whether the TensorRT libraries are there (``ldconfig -p | grep nvinfer``, ``import
tensorrt``). With TensorRT: builds each ONNX in FP32, FP16 and INT8 (FP16/INT8 through
``repvgg_deploy.quantize`` when installed), compares each engine's logits with ONNX Runtime on
the FP32 ONNX, inspects layer precisions and times batch 1 and 8 with CUDA graphs. Without
TensorRT: checks the runtime half that needs no TensorRT (PyTorch CUDA tensors, raw pointers,
non-default streams, events, CUDA graph capture) and records that TensorRT was absent. Writes
``trt_gpu_check.json`` and ``trt_gpu_check.md`` to the output folder; exit 0 unless a check failed.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sh(cmd: str, timeout: int = 20) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except Exception as e:  # pragma: no cover - best effort
        return f"<{type(e).__name__}: {e}>"


def environment() -> Dict[str, Any]:
    import torch

    env: Dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "nvidia_smi": sh("nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader"),
        "ldconfig_nvinfer": [line.strip() for line in sh("ldconfig -p | grep -i nvinfer").splitlines() if line.strip()],
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                      "memory_gib": round(p.total_memory / 2**30, 1)}
    try:
        import tensorrt as trt

        env["tensorrt"] = {"importable": True, "version": trt.__version__, "module": getattr(trt, "__file__", "")}
    except Exception as e:
        env["tensorrt"] = {"importable": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    for pkg in ("onnxruntime", "onnxruntime-gpu", "onnx", "cuda-python", "tensorrt", "tensorrt-cu12", "tensorrt-cu13"):
        try:
            import importlib.metadata as md

            env.setdefault("packages", {})[pkg] = md.version(pkg)
        except Exception:
            pass
    return env


def runtime_half() -> Dict[str, Any]:
    """What TrtRunner needs from PyTorch, checked without TensorRT."""
    import torch

    out: Dict[str, Any] = {}
    if not torch.cuda.is_available():
        return {"ok": False, "error": "torch.cuda.is_available() is False"}
    dev = torch.device("cuda", 0)
    x = torch.randn(64, 3, 224, 224, device=dev)
    w = torch.randn(64, 3, 3, 3, device=dev)
    out["data_ptr_nonzero"] = x.data_ptr() != 0
    out["default_stream_handle"] = torch.cuda.current_stream(dev).cuda_stream
    s = torch.cuda.Stream(dev)
    out["side_stream_handle_nonzero"] = s.cuda_stream != 0
    s.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(s):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y = torch.nn.functional.conv2d(x, w, padding=1)
        end.record()
    torch.cuda.current_stream(dev).wait_stream(s)
    torch.cuda.synchronize()
    out["event_ms"] = round(start.elapsed_time(end), 4)
    static_in = torch.randn(8, 3, 64, 64, device=dev)
    static_out = torch.empty(8, 64, 64, 64, device=dev)
    with torch.cuda.stream(s):  # warm-up outside capture
        static_out.copy_(torch.nn.functional.conv2d(static_in, w, padding=1))
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out["capture_stream_handle_nonzero"] = torch.cuda.current_stream(dev).cuda_stream != 0
        static_out.copy_(torch.nn.functional.conv2d(static_in, w, padding=1))
    static_in.normal_()
    graph.replay()
    torch.cuda.synchronize()
    ref = torch.nn.functional.conv2d(static_in, w, padding=1)
    out["graph_replay_matches"] = bool(torch.allclose(static_out, ref, atol=1e-4))
    out["ok"] = all(v for k, v in out.items() if k.endswith(("nonzero", "matches")))
    del y
    return out


def export_defaults(folder: Path) -> List[Path]:
    import torch

    from repvgg_deploy import create_model, export_onnx

    paths = []
    for arch in ("A0", "B2"):
        path = folder / f"repvgg-{arch.lower()}.onnx"
        if not path.exists():
            torch.manual_seed(0)
            model = create_model(arch, num_classes=1000).eval()
            export_onnx(model, path, img_size=224, metadata={"mean": [0.485, 0.456, 0.406],
                                                               "std": [0.229, 0.224, 0.225]})
        paths.append(path)
    return paths


def check_model(onnx_path: Path, out_dir: Path, args, deadline: float, log) -> Dict[str, Any]:
    import numpy as np

    from repvgg_deploy.backend.onnxrt import OnnxrtRunner
    from repvgg_deploy.backend.trt import TrtRunner, load_engine
    from repvgg_deploy.backend.trt.inspector import inspect_engine, summarize
    from repvgg_deploy.build import BuildConfig, build_engine
    from repvgg_deploy.export.onnx_export import get_metadata
    from repvgg_deploy.verify import load_onnx

    meta = get_metadata(load_onnx(onnx_path))
    img, ch = int(meta.get("img_size", 224)), int(meta.get("in_chans", 3))
    x = np.random.default_rng(0).standard_normal((8, ch, img, img)).astype(np.float32)
    t = time.perf_counter()
    ref = OnnxrtRunner(onnx_path)(x).astype(np.float64)
    result: Dict[str, Any] = {"onnx": str(onnx_path), "arch": meta.get("arch"), "ort_s": round(time.perf_counter() - t, 2),
                              "engines": {}}
    try:
        import repvgg_deploy.quantize as quantize
    except ImportError as e:
        quantize = None
        result["quantize"] = f"unavailable ({e})"
    for precision in ("fp32", "fp16", "int8"):
        entry: Dict[str, Any] = {}
        result["engines"][precision] = entry
        if time.time() > deadline:
            entry["skipped"] = "time budget spent"
            continue
        try:
            src = onnx_path
            if precision != "fp32":
                if quantize is None:
                    entry["skipped"] = "repvgg_deploy.quantize not installed"
                    continue
                if precision == "int8" and not args.calib:
                    entry["skipped"] = "no --calib"
                    continue
                dst = out_dir / f"{onnx_path.stem}-{precision}.onnx"
                t = time.perf_counter()
                src = Path(quantize.to_fp16_onnx(onnx_path, dst) if precision == "fp16" else
                           quantize.to_int8_onnx(onnx_path, dst, calib=args.calib, calib_images=args.calib_images))
                entry["convert_s"] = round(time.perf_counter() - t, 2)
            engine = out_dir / f"{onnx_path.stem}-{precision}.engine"
            m = build_engine(src, engine, BuildConfig(batch=tuple(args.batch), opt_level=args.opt_level,
                                                      timing_cache=out_dir / "timing.cache"), log=log)
            entry.update({"engine": str(engine), "build_s": m.build["seconds"], "precision": m.precision,
                          "tensorrt": m.tensorrt["version"], "engine_mb": round(m.engine_bytes / 1e6, 2)})
            runner = TrtRunner(engine, log=log)
            got = runner(x).astype(np.float64)
            scale = float(np.abs(ref).max())
            entry["max_abs_err"] = float(np.abs(got - ref).max())
            entry["max_rel_err"] = entry["max_abs_err"] / scale
            entry["cosine"] = float((got * ref).sum() / (np.linalg.norm(got) * np.linalg.norm(ref)))
            entry["top1_agreement"] = float((got.argmax(1) == ref.argmax(1)).mean())
            entry["layers_by_precision"] = summarize(inspect_engine(load_engine(engine, log=log)))
            entry["timing"] = {f"batch{b}": runner.benchmark(b, iters=50, warmup=10, cuda_graph=True)
                               for b in (1, min(8, runner.max_batch))}
            limit = {"fp32": 1e-2, "fp16": 5e-2, "int8": None}[precision]
            entry["ok"] = (entry["max_rel_err"] <= limit) if limit else entry["cosine"] > 0.9
        except Exception as e:
            entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            entry["traceback"] = traceback.format_exc(limit=6)
            entry["ok"] = False
        log(f"{onnx_path.name} {precision}: {json.dumps({k: v for k, v in entry.items() if k != 'traceback'})[:400]}")
    return result


def markdown(report: Dict[str, Any]) -> str:
    env = report["environment"]
    trt_env = env["tensorrt"]
    lines = ["# TensorRT GPU check", "",
             f"- date: {report['date']}, took {report['seconds']:.0f} s",
             f"- GPU: {env.get('gpu', {}).get('name', 'none')} (cc {env.get('gpu', {}).get('compute_capability', '-')}),"
             f" nvidia-smi: `{env['nvidia_smi'] or '-'}`",
             f"- torch {env['torch']} (CUDA {env['torch_cuda']}), cuda available: {env['cuda_available']}",
             f"- libnvinfer in ldconfig: {len(env['ldconfig_nvinfer'])} entries",
             f"- import tensorrt: {trt_env.get('version') if trt_env['importable'] else 'FAILED: ' + trt_env['error']}",
             f"- runtime half (torch CUDA tensors, streams, events, CUDA graph): "
             f"{'ok' if report['runtime_half'].get('ok') else 'FAILED'} {json.dumps(report['runtime_half'])}", ""]
    if not report["models"]:
        lines.append("TensorRT absent: no engines built." if not trt_env["importable"] else "No models checked.")
    for model in report["models"]:
        lines += ["", f"## {model['onnx']} ({model.get('arch')})", "",
                  "| precision | ok | build s | max rel err | cosine | top-1 agree | layers | b1 ms | b8 ms | note |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for prec, e in model["engines"].items():
            timing = e.get("timing", {})
            ms = [f"{t['median_ms']:.3f}" for t in timing.values()] + ["-", "-"]
            note = e.get("skipped") or e.get("error") or ""
            lines.append(f"| {prec} | {e.get('ok', '-')} | {e.get('build_s', '-')} | "
                         f"{e.get('max_rel_err', float('nan')):.2e} | {e.get('cosine', float('nan')):.5f} | "
                         f"{e.get('top1_agreement', '-')} | {e.get('layers_by_precision', '-')} | {ms[0]} | {ms[1]} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", nargs="*", type=Path, help="ONNX files (default: export random-weight A0 and B2)")
    p.add_argument("-o", "--output", type=Path, default=ROOT / "results" / "trt-gpu-check", help="output folder")
    p.add_argument("--calib", default="random", help="calibration SPEC for INT8 (default: random)")
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--batch", type=lambda s: [int(v) for v in s.split(":")], default=[1, 8, 32], help="profile, default 1:8:32")
    p.add_argument("--opt-level", type=int, default=2, help="builder optimization level (default 2, for speed)")
    p.add_argument("--budget", type=float, default=270, help="seconds after which no new build starts (default 270)")
    args = p.parse_args(argv)
    t0 = time.time()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    log_lines: List[str] = []

    def log(s: str) -> None:
        log_lines.append(s)
        print(s, file=sys.stderr, flush=True)

    from repvgg_deploy.utils.env import now_iso

    report: Dict[str, Any] = {"date": now_iso(), "environment": environment(), "models": []}
    log(f"environment: {json.dumps(report['environment'])[:600]}")
    try:
        report["runtime_half"] = runtime_half()
    except Exception as e:
        report["runtime_half"] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    log(f"runtime half: {report['runtime_half']}")
    ok = bool(report["runtime_half"].get("ok"))
    if report["environment"]["tensorrt"]["importable"] and report["environment"]["cuda_available"]:
        onnx_files = args.onnx or export_defaults(out)
        for path in onnx_files:
            report["models"].append(check_model(path, out, args, t0 + args.budget, log))
        ok = ok and all(e.get("ok", True) for m in report["models"] for e in m["engines"].values() if "skipped" not in e)
    else:
        report["note"] = "TensorRT absent or no GPU: only the runtime half was checked"
    report["seconds"] = time.time() - t0
    report["ok"] = ok
    from repvgg_deploy.utils.io import atomic_write_text

    atomic_write_text(out / "trt_gpu_check.json", json.dumps(report, indent=2, default=str) + "\n")
    atomic_write_text(out / "trt_gpu_check.md", markdown(report))
    atomic_write_text(out / "trt_gpu_check.log", "\n".join(log_lines) + "\n")
    print(out / "trt_gpu_check.md")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
