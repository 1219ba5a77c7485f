"""The README's Python API block runs as written (on a checkpoint of this project's format)."""
import contextlib
import io
import os
import re
from pathlib import Path

import pytest
import torch

from repvgg_deploy import create_model
from repvgg_deploy.checkpoint import save_checkpoint
from repvgg_deploy.fuse.reparam import is_deploy

from conftest import has_fashion

ROOT = Path(__file__).resolve().parents[1]


def readme_python_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the README's Python API section should hold one python block"
    return blocks[0]


@pytest.mark.skipif(not has_fashion, reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_readme_python_api_block_runs(tmp_path):
    code = readme_python_block()
    assert 'load_checkpoint("ckpt.pth")' in code
    torch.manual_seed(0)
    save_checkpoint(create_model("A0", num_classes=10, in_chans=1), tmp_path / "ckpt.pth")
    old, out, ns = os.getcwd(), io.StringIO(), {}
    try:
        os.chdir(tmp_path)
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md (Python API)", "exec"), ns)
    finally:
        os.chdir(old)
    assert is_deploy(ns["deploy"]) and not is_deploy(ns["model"])  # a fused copy; the loaded model untouched
    assert (tmp_path / "a0.onnx").stat().st_size > 0 and (tmp_path / "a0-int8.onnx").stat().st_size > 0
    top1 = float(out.getvalue().strip().splitlines()[-1])  # what the block prints: a percentage
    assert 0.0 <= top1 <= 100.0
