"""Write a benchmark's results: report.md, results.csv, results.json and PNG plots (atomically)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ..utils.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["write_report", "results_markdown", "paper_markdown", "CSV_COLUMNS", "fmt"]

CSV_COLUMNS = [
    "model", "model_key", "family", "backend", "device", "precision", "batch", "img_size", "options", "status",
    "images_per_s", "throughput_qps", "latency_ms_min", "latency_ms_mean", "latency_ms_median", "latency_ms_p90",
    "latency_ms_p95", "latency_ms_p99", "latency_ms_max", "latency_ms_cv", "gpu_ms_min", "gpu_ms_mean",
    "gpu_ms_median", "gpu_ms_p90", "gpu_ms_p95", "gpu_ms_p99", "gpu_ms_max", "gpu_ms_cv", "round_cv", "rounds",
    "iterations", "wall_s", "timing", "threads", "params_m", "gmacs", "tflops", "peak_tflops", "peak_source",
    "peak_fraction", "paper_name", "paper_top1", "paper_speed_1080ti", "round_images_per_s", "error", "notes",
]


def fmt(v: Any, digits: int = 3) -> str:
    """Numbers for tables: 3 significant digits (integers as they are), '-' for missing."""
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "-"
        if v == 0:
            return "0"
        if abs(v) >= 10 ** digits:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) >= 1e-3 else f"{v:.2e}"
    return str(v).replace("|", "/")


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(records: Sequence[Dict[str, Any]]) -> str:
    gpu = any(r.get("gpu_ms_median") is not None for r in records)
    peak = any(r.get("peak_fraction") is not None for r in records)
    header = ["model", "backend", "device", "precision", "batch", "img", "options", "images/s", "qps", "lat mean ms",
              "median", "p90", "p95", "p99", "min"]
    if gpu:
        header += ["GPU compute median ms", "GPU CV"]
    header += ["CV", "rounds CV", "GMACs/img", "TFLOP/s"]
    if peak:
        header += ["% of peak"]
    header += ["top-1 (paper)"]
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        row = [fmt(r["model"]), r["backend"], r["device"], r["precision"], str(r["batch"]), fmt(r.get("img_size")),
               r.get("options") or "-",
               fmt(r.get("images_per_s")), fmt(r.get("throughput_qps")), fmt(r.get("latency_ms_mean")),
               fmt(r.get("latency_ms_median")), fmt(r.get("latency_ms_p90")), fmt(r.get("latency_ms_p95")),
               fmt(r.get("latency_ms_p99")), fmt(r.get("latency_ms_min"))]
        if gpu:
            row += [fmt(r.get("gpu_ms_median")), _pct(r.get("gpu_ms_cv"))]
        row += [_pct(r.get("latency_ms_cv")), _pct(r.get("round_cv")), fmt(r.get("gmacs")), fmt(r.get("tflops"))]
        if peak:
            row += [_pct(r.get("peak_fraction"))]
        row += [fmt(r.get("paper_top1"))]
        rows.append(row)
    return _table(header, rows) if rows else "_no row ran_"


def paper_markdown(comp: Dict[str, Any]) -> str:
    head = (f"Paper Table {comp['table']} protocol: {comp['backend']} on {comp['device']}, {comp['precision']}, "
            f"batch {comp['batch']}, {comp['img_size']}x{comp['img_size']}"
            + (f", {comp['options']}" if comp.get("options") else ""))
    lines = [f"**{head}.** Speeds in images/s; ratio = speed / ResNet-50's speed on the same machine "
             f"(paper: {comp['baseline_paper_speed']:g} images/s on a GTX 1080Ti"
             + (f"; measured: {fmt(comp['baseline_measured_speed'])}" if comp.get("baseline_measured_speed") else "")
             + ")."]
    for n in comp["notes"]:
        lines.append(f"\n> Note: {n}.")
    header = ["model", "top-1 (paper)", "1080Ti images/s (paper)", "ratio to ResNet-50 (paper)",
              "measured images/s", "ratio to ResNet-50 (measured)", "params M (paper / here)", "G multiply-adds (paper / here)"]
    rows = []
    for r in comp["rows"]:
        measured = fmt(r["measured_speed"]) if r["measured_speed"] else (r["status"] if r["status"] != "ok" else "-")
        rows.append([r["model"], f"{r['paper_top1']:.2f}", f"{r['paper_speed']:g}", f"{r['paper_ratio']:.2f}",
                     measured, "-" if r["measured_ratio"] is None else f"{r['measured_ratio']:.2f}",
                     f"{r['paper_params_m']:.2f} / {fmt(r['params_m'])}", f"{r['paper_gflops']:g} / {fmt(r['gmacs'])}"])
    lines.append("")
    lines.append(_table(header, rows))
    if comp.get("spearman") is not None:
        lines.append(f"\nRank correlation of the speed orderings (Spearman, {comp['pairs']} models): "
                     f"**{comp['spearman']:.3f}** (1 = same order as the paper).")
    return "\n".join(lines)


def _env_markdown(env: Dict[str, Any], settings: Dict[str, Any]) -> str:
    v = env.get("versions", {})
    gpu = env.get("gpu")
    rows = [["date", str(env.get("date"))], ["host", str(env.get("host"))], ["OS", str(env.get("os"))],
            ["CPU", f"{env.get('cpu')} ({env.get('cpu_count')} logical cores visible)"],
            ["CPU threads used", str(settings.get("threads"))]]
    if gpu:
        rows += [["GPU", f"{gpu.get('name')} (sm {gpu.get('compute_capability')}, {gpu.get('memory_gib')} GiB)"],
                 ["driver / CUDA (torch)", f"{gpu.get('driver')} / {gpu.get('cuda')}"]]
        if env.get("cudnn"):
            rows.append(["cuDNN", str(env["cudnn"])])
    else:
        rows.append(["GPU", "none"])
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    rows.append(["versions", libs])
    if env.get("load_average"):
        rows.append(["load average at start (1/5/15 min)", env["load_average"]])
    if env.get("other_cpu_share") is not None:
        rows.append(["CPU time used by other processes during the run", f"{100 * env['other_cpu_share']:.0f}%"])
    return _table(["", ""], rows)


def _method_line(s: Dict[str, Any]) -> str:
    return (f"Warm-up {s['warmup_s']:g} s and >= {s['warmup_iters']} iterations per case; then {s['rounds']} "
            f"interleaved rounds (A B C A B C ...) of >= {s['duration_s']:g} s and >= {s['min_iters']} iterations per "
            f"case, each preceded by {s['rewarm_iters']} re-warming iterations; one query in flight; inputs N(0,1) "
            f"rotated among {s['buffers']} buffers. GPU rows: latency = host time per query (enqueue to completion), "
            "GPU compute = CUDA events around the work; CPU rows: host time. Throughput = images / total timed wall "
            "time. TFLOP/s counts 2 FLOPs per multiply-add; GMACs per image from the ONNX graph (Conv/Gemm/MatMul). "
            "CV = std / mean of the per-query latencies; rounds CV = of the per-round throughputs. Method: "
            "docs/benchmark.md.")


def write_report(out: Path, doc: Dict[str, Any], plots: bool = True) -> List[Path]:
    """Write report.md, results.csv, results.json (and PNGs) into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = doc["results"]
    written = []
    atomic_write_json(out / "results.json", doc)
    written.append(out / "results.json")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        flat = {k: (";".join(f"{x:.6g}" for x in v) if isinstance(v, list) else v) for k, v in r.items()}
        w.writerow(flat)
    atomic_write_text(out / "results.csv", buf.getvalue())
    written.append(out / "results.csv")
    images = []
    if plots:
        images = write_plots(out, records, doc.get("paper") or [])
        written += images
    atomic_write_text(out / "report.md", report_markdown(doc, [p.name for p in images]))
    written.append(out / "report.md")
    return written


def report_markdown(doc: Dict[str, Any], images: Sequence[str] = ()) -> str:
    records = doc["results"]
    parts = ["# repvgg-bench report", "", f"Command: `{doc.get('command', '')}`", ""]
    parts += ["## Environment", "", _env_markdown(doc["environment"], doc["settings"]), ""]
    parts += ["## Method", "", _method_line(doc["settings"]), ""]
    if doc.get("peaks"):
        parts += ["Matrix-multiply peaks measured here: " + ", ".join(
            f"{k} {v:.1f} TFLOP/s" for k, v in doc["peaks"].items()) + " (8192^3 torch.mm, CUDA events, best batch).", ""]
    if doc["settings"].get("peak_tflops"):
        parts += [f"Peak given with --peak-tflops: {doc['settings']['peak_tflops']:g} TFLOP/s.", ""]
    parts += ["## Results", "", "Every figure is for the precision and batch of its row; latencies in ms.", "",
              results_markdown(records), ""]
    for comp in doc.get("paper") or []:
        parts += ["## The paper's Table 4, side by side", "", paper_markdown(comp), ""]
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        parts += ["## Failed rows", ""]
        parts += [f"- {r['model']} ({r['backend']}, {r['precision']}, batch {r['batch'] or '?'}): {r.get('error')}" for r in failed]
        parts.append("")
    if doc.get("skipped"):
        parts += ["## Skipped inputs", ""] + [f"- `{p}`: {why}" for p, why in doc["skipped"]] + [""]
    notes = [f"- {r['model']} ({r['backend']}, batch {r['batch']}): {r['notes']}" for r in records if r.get("notes")]
    notes += [f"- {n}" for n in doc.get("notes", [])]
    if notes:
        parts += ["## Notes", ""] + notes + [""]
    if images:
        parts += ["## Plots", ""] + [f"![{Path(i).stem}]({i})" for i in images] + [""]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------- plots
def _series_label(r: Dict[str, Any]) -> str:
    opts = f", {r['options']}" if r.get("options") else ""
    return f"{r['model']} ({r['backend']} {r['device']} {r['precision']}{opts})"


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def write_plots(out: Path, records: Sequence[Dict[str, Any]], paper: Sequence[Dict[str, Any]]) -> List[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in records if r.get("status") == "ok" and r.get("images_per_s")]
    paths: List[Path] = []
    if not ok:
        return paths
    # throughput vs batch, one line per model/backend/precision/options
    series: Dict[str, List[Dict[str, Any]]] = {}
    for r in ok:
        series.setdefault(_series_label(r), []).append(r)
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for label, rs in series.items():
        rs = sorted(rs, key=lambda r: r["batch"])
        style = "-o" if str(rs[0].get("family")) == "repvgg" else "--s"
        ax.plot([r["batch"] for r in rs], [r["images_per_s"] for r in rs], style, label=label, markersize=4)
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    all_batches = sorted({r["batch"] for r in ok})
    ax.xaxis.set_major_locator(FixedLocator(all_batches))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s)")
    ax.set_title("Throughput vs batch")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, loc="best", ncol=2 if len(series) > 10 else 1)
    paths.append(_save(fig, out / "throughput_vs_batch.png"))
    plt.close(fig)
    # speed vs accuracy (the paper's Figure 1): the largest group of rows with a known top-1
    acc = [r for r in ok if r.get("paper_top1") and not str(r.get("model_key", "")).endswith("-train")]
    if acc:
        groups: Dict[tuple, List[Dict[str, Any]]] = {}
        for r in acc:
            groups.setdefault((r["backend"], r["device"], r["precision"], r["batch"], r.get("options") or ""), []).append(r)
        key = max(groups, key=lambda k: (len(groups[k]), k[3]))
        rs = groups[key]
        panels = 2 if paper else 1
        fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 5.5), squeeze=False)
        _scatter(axes[0][0], [(r["model"], r["images_per_s"], r["paper_top1"], r["family"] == "repvgg") for r in rs],
                 f"measured: {key[0]} {key[1]} {key[2]}, batch {key[3]}, {rs[0].get('img_size')}x{rs[0].get('img_size')}"
                 f"{', ' + key[4] if key[4] else ''}")
        if paper:
            prow = paper[0]["rows"]
            _scatter(axes[0][1], [(p["model"], p["paper_speed"], p["paper_top1"], p["model"].startswith("RepVGG"))
                                  for p in prow], "paper: GTX 1080Ti, PyTorch FP32, batch 128, 224x224")
        fig.suptitle("ImageNet top-1 (from the paper) vs speed", fontsize=11)
        paths.append(_save(fig, out / "speed_vs_accuracy.png"))
        plt.close(fig)
    return paths


def _scatter(ax, pts, title: str) -> None:
    for name, speed, top1, rep in pts:
        ax.scatter([speed], [top1], marker="o" if rep else "s", color="tab:red" if rep else "tab:blue", s=24)
        ax.annotate(name.replace(" (32x4d)", ""), (speed, top1), fontsize=6, xytext=(3, 2), textcoords="offset points")
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("speed (images/s)")
    ax.set_ylabel("top-1 accuracy (%) reported in the paper")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
