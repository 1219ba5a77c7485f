"""Shared fixtures: small random models with non-trivial BatchNorm statistics."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random running statistics and affine terms in every BatchNorm (eval-mode fusion needs them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g, dtype=torch.float64).to(m.running_mean.dtype) * 0.5)
                m.running_var.copy_((torch.rand(n, generator=g, dtype=torch.float64) * 1.5 + 0.5).to(m.running_var.dtype))
                m.weight.copy_((torch.rand(n, generator=g, dtype=torch.float64) + 0.5).to(m.weight.dtype))
                m.bias.copy_((torch.randn(n, generator=g, dtype=torch.float64) * 0.5).to(m.bias.dtype))
    return model


def read_only_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root writes into mode-555 folders: then /sys)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:  # root writes into mode-555 folders; fall back to a folder the kernel refuses
        (ro / "probe").touch()
        (ro / "probe").unlink()
        return Path("/sys")
    except OSError:
        return ro


def run_cli(*args: str, cwd=None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a console script through ``python -m`` (same interpreter, no PATH assumptions)."""
    module = {
        "repvgg-export": "repvgg_deploy.cli.export",
        "repvgg-trt": "repvgg_deploy.cli.trt",
        "repvgg-train": "repvgg_deploy.cli.train",
        "repvgg-eval": "repvgg_deploy.cli.eval",
        "repvgg-bench": "repvgg_deploy.cli.bench",
        "repvgg-pipeline": "repvgg_deploy.cli.pipeline",
    }[args[0]]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *args[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture
def bn_randomizer():
    return randomize_bn


FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
has_fashion = (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists()
has_cuda = torch.cuda.is_available()
