"""Any mixer in any stage of any macro: every registered mixer type is placed at every stage position of a
small unified-macro spec (and in the third stage of every other macro), then estimated, built, run forward and
backward, and its estimate compared with the counted cross-check. A cell may instead be rejected before
building, but only with a SpecError that names the stage and the reason. New mixer types join the matrix by
registering."""

import pytest
import torch

import composer
from composer.cost import count_macs
from composer.macro import MACROS
from composer.mixers import MIXERS

# Stage maps 28, 14, 7, 4 at 112 (a 4x4 last map exercises the mixers' edge cases: Halo's 7x7 blocks cannot tile
# it); widths divisible by the default head dims (24, 32) and DCN groups (16).
MATRIX = """
name: matrix_{type}_{stage}
macro: {macro}
input_size: 112
num_classes: 10
widths: [96, 192, 288, 384]
depths: [1, 1, 2, 1]
layout: {layout}
mixers:
  X: {{type: {type}}}
"""
EXPECTED_REJECTIONS: dict[tuple[str, str, int], str] = {}
"""(macro, mixer type, stage) -> a phrase the rejection must contain; empty: every cell must compile."""


def _spec(macro: str, mixer_type: str, stage: int) -> str:
    layout = "-".join("X" if i == stage else "Id" for i in range(4))
    return MATRIX.format(macro=macro, type=mixer_type, stage=stage, layout=layout)


def _check_cell(macro: str, mixer_type: str, stage: int, backward: bool) -> None:
    text = _spec(macro, mixer_type, stage)
    try:
        est = composer.estimate(text)
    except composer.SpecError as exc:
        reason = EXPECTED_REJECTIONS.get((macro, mixer_type, stage))
        assert reason is not None, f"{mixer_type} rejected in stage {stage} of {macro}: {exc}"
        assert f"stage {stage}" in str(exc) and reason in str(exc)
        return
    model = composer.compose(text)
    assert est.params == sum(p.numel() for p in model.parameters())
    counted = count_macs(text)
    assert counted.unknown_ops == {}
    assert abs(counted.macs - est.macs) <= 0.01 * est.macs, (counted.macs, est.macs)
    assert abs(counted.fft_macs - est.fft_macs) <= 0.01 * max(est.fft_macs, 1.0)
    x = torch.randn(1, 3, 112, 112)
    if backward:
        model.train()
        out = model(x)
        assert out.shape == (1, 10) and torch.isfinite(out).all()
        out.square().mean().backward()
        grads = [p.grad for p in model.stages[stage].blocks[0].parameters() if p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    else:
        with torch.no_grad():
            assert model.eval()(x).shape == (1, 10)


@pytest.mark.parametrize("stage", range(4))
@pytest.mark.parametrize("mixer_type", sorted(MIXERS))
def test_every_mixer_in_every_stage_of_the_unified_macro(mixer_type, stage):
    torch.manual_seed(0)
    _check_cell("unified", mixer_type, stage, backward=True)


@pytest.mark.parametrize("macro", sorted(set(MACROS) - {"unified"}))
@pytest.mark.parametrize("mixer_type", sorted(MIXERS))
def test_every_mixer_in_every_macro(macro, mixer_type):
    torch.manual_seed(0)
    _check_cell(macro, mixer_type, 2, backward=False)
