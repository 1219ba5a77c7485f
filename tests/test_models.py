"""The model family matches the paper: names, widths, depths, group-wise layers, parameter counts."""
import math

import pytest
import torch

from repvgg_deploy.models import ARCHS, create_model, get_config, list_archs, resolve_arch
from repvgg_deploy.models.repvgg import block_list, count_params
from repvgg_deploy.reference import paper_row

PAPER_ARCHS = ["A0", "A1", "A2", "B0", "B1", "B1g2", "B1g4", "B2", "B2g2", "B2g4", "B3", "B3g2", "B3g4"]


def test_registry_has_the_paper_family_and_qa_variants():
    assert [a.split("-", 1)[1] for a in list_archs("repvgg")] == PAPER_ARCHS
    assert [a.split("-", 1)[1] for a in list_archs("qarepvgg")] == PAPER_ARCHS


@pytest.mark.parametrize("spelling", ["A0", "a0", "RepVGG-A0", "repvgg_a0", "REPVGG-A0", "repvgg-a0", "RepVGG_A0"])
def test_name_spellings(spelling):
    assert resolve_arch(spelling) == "RepVGG-A0"


@pytest.mark.parametrize("spelling", ["QA-A0", "qa_a0", "QARepVGG-A0", "qarepvgg_a0", "qa-repvgg-a0"])
def test_qa_spellings(spelling):
    assert resolve_arch(spelling) == "QARepVGG-A0"


@pytest.mark.parametrize("bad", ["A3", "B4", "C0", "resnet50", "", "B1g3", "A0g2"])
def test_unknown_names_raise(bad):
    with pytest.raises(KeyError, match="unknown arch"):
        resolve_arch(bad)


@pytest.mark.parametrize("arch", [a for a in PAPER_ARCHS if a not in ("B2g2", "B3g2")])  # the only two without a row
def test_deploy_params_match_paper_table(arch):
    row = paper_row(f"RepVGG-{arch}")
    with torch.device("meta"):
        model = create_model(arch, deploy=True)
    params_m = count_params(model) / 1e6
    # The paper truncates to two decimals.
    assert math.floor(params_m * 100) / 100 == pytest.approx(row.params_m, abs=1e-9), params_m


@pytest.mark.parametrize("arch,depths,widths,stem", [
    ("A0", (2, 4, 14, 1), (48, 96, 192, 1280), 48),
    ("A1", (2, 4, 14, 1), (64, 128, 256, 1280), 64),
    ("A2", (2, 4, 14, 1), (96, 192, 384, 1408), 64),
    ("B0", (4, 6, 16, 1), (64, 128, 256, 1280), 64),
    ("B1", (4, 6, 16, 1), (128, 256, 512, 2048), 64),
    ("B2", (4, 6, 16, 1), (160, 320, 640, 2560), 64),
    ("B3", (4, 6, 16, 1), (192, 384, 768, 2560), 64),
])
def test_stage_widths_and_depths(arch, depths, widths, stem):
    with torch.device("meta"):
        model = create_model(arch)
    assert model.stage0.out_channels == stem
    for stage, depth, width in zip(model.stages[1:], depths, widths):
        assert len(stage) == depth
        assert all(b.out_channels == width for b in stage)
    assert model.linear.in_features == widths[-1]


@pytest.mark.parametrize("arch,groups", [("B1g2", 2), ("B2g4", 4), ("B3g2", 2), ("QA-B1g4", 4)])
def test_groupwise_layers_are_the_even_ones(arch, groups):
    with torch.device("meta"):
        model = create_model(arch)
    blocks = block_list(model)
    assert blocks[0] is model.stage0 and blocks[0].groups == 1  # the stem is not counted
    for layer, block in enumerate(blocks[1:], start=1):
        expected = groups if layer % 2 == 0 and layer <= 26 else 1
        assert block.groups == expected, (layer, block.groups)
    assert get_config(arch).groups_map == {i: groups for i in range(2, 27, 2)}


def test_num_classes_and_in_chans():
    model = create_model("A0", num_classes=10, in_chans=1).eval()
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 10)
    assert model.stage0.rbr_dense.conv.in_channels == 1


def test_deploy_form_is_plain():
    with torch.device("meta"):
        model = create_model("B1g4", deploy=True)
    for block in block_list(model):
        names = {n for n, _ in block.named_children()}
        assert names == {"rbr_reparam", "nonlinearity"}
        assert block.rbr_reparam.kernel_size == (3, 3)
