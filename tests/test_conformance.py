"""The conformance kit (``composer check-mixer``, composer/conformance.py) on every built-in mixer, and on mixers
broken on purpose: a cost that under-counts a convolution, a check that lets through a width the module cannot
take, a module that does not script. The kit replaces the old mixer matrix: every registered symbol in every
stage of every macro, built, run forward and backward, params and MACs against the Plan."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from composer.conformance import check_mixer
from composer.cost_types import Cost, conv_cost
from composer.mixers import MIXERS, SYMBOLS, MixerCheckError, MixerConfig, register_mixer, register_symbol
from composer.registry import isolated

UNBOUND = sorted(t for t in MIXERS if not any(s.type == t for e in SYMBOLS.values() for s in e.values()))


@pytest.mark.parametrize("name", sorted(SYMBOLS) + UNBOUND)
def test_every_builtin_mixer_passes_the_kit(name):
    report = check_mixer(name)
    assert report.ok, report.table(verbose=True)
    # composer's own mixers compile in every stage of every macro at the kit's size: no refusal there
    assert [r for r in report.results if r.check == "compile" and r.status != "ok"] == [], report.table()
    checks = {r.check for r in report.results}
    assert {"compile", "params", "macs", "forward/backward", "yaml round trip", "json schema", "state dict",
            "torchscript", "fx", "impossible context", "hostile values"} <= checks


class _DepthwiseBase(MixerConfig):
    kernel_size: int = 3
    layout = "channels_first"

    def cost(self, ctx):
        return conv_cost(ctx.dim, ctx.dim, self.kernel_size, (ctx.height, ctx.width), groups=ctx.dim)

    def build(self, ctx):
        from torch import nn

        return nn.Conv2d(ctx.dim, ctx.dim, self.kernel_size, padding=self.kernel_size // 2, groups=ctx.dim)


@pytest.fixture
def registry():
    with isolated():
        yield


def test_a_cost_that_undercounts_a_convolution_fails_the_macs_check(registry, capsys):
    @register_mixer
    class UnderCounted(_DepthwiseBase):
        type: Literal["under_counted"] = "under_counted"
        kernel_size: int = Field(3, ge=1, le=31)   # bounded: the kit's hostile values find nothing else to fail

        def cost(self, ctx):  # forgets the k² taps of the depthwise conv in the MACs
            right = super().cost(ctx)
            return Cost(right.params, right.macs // self.kernel_size ** 2)

    register_symbol("Under", "under_counted")
    report = check_mixer("Under", quick=True)
    assert not report.ok
    failed = {r.check for r in report.failed}
    assert failed == {"macs"}, report.table()
    assert "counted" in report.failed[0].detail and "!= analytic" in report.failed[0].detail

    from composer.cli import main

    assert main(["check-mixer", "Under", "--quick"]) == 1
    out = capsys.readouterr().out
    assert "macs                 FAIL" in out and "FAILED:" in out


def test_a_check_that_misses_an_impossible_width_fails(registry):
    @register_mixer
    class Grouped(_DepthwiseBase):
        """Groups of 4 channels, but ``check`` never says the width must be a multiple of 4."""

        type: Literal["grouped_unchecked"] = "grouped_unchecked"

        def cost(self, ctx):
            return conv_cost(ctx.dim, ctx.dim, 3, (ctx.height, ctx.width), groups=ctx.dim // 4)

        def build(self, ctx):
            from torch import nn

            return nn.Conv2d(ctx.dim, ctx.dim, 3, padding=1, groups=ctx.dim // 4)

    report = check_mixer("grouped_unchecked", quick=True)
    failed = [r for r in report.failed if r.check == "impossible context"]
    assert failed and all("passed the check, then" in r.detail or "check / cost crashed" in r.detail
                          for r in failed), report.table()
    assert any("prime width" in r.where and "in_channels must be divisible by groups" in r.detail for r in failed)

    @register_mixer
    class GroupedChecked(Grouped):
        type: Literal["grouped_checked"] = "grouped_checked"

        def check(self, ctx):
            if ctx.dim % 4:
                raise MixerCheckError(f"width {ctx.dim} is not a multiple of 4")

    report = check_mixer("grouped_checked", quick=True)
    assert report.ok, report.table()
    refused = [r for r in report.results if r.status == "refused"]
    assert refused and all(r.detail.startswith("<string>:") and "not a multiple of 4" in r.detail
                           for r in refused)


def test_a_ratio_the_check_forgets_fails_the_hostile_values(registry):
    """Issue 27: a plugin's ratio that leaves no channel at small widths must be refused by its check (located),
    not crash in the cost; check-mixer feeds every numeric field 0, negatives, tiny and huge values."""
    from pydantic import PositiveFloat

    @register_mixer
    class Squeezed(_DepthwiseBase):
        """A grouped conv of int(ratio·C) groups: a ratio of 0.01 at width 8 leaves none."""

        type: Literal["squeezed_unchecked"] = "squeezed_unchecked"
        ratio: PositiveFloat = 1.0   # depthwise at its default: it passes every other check of the kit

        def cost(self, ctx):
            return conv_cost(ctx.dim, ctx.dim, 3, (ctx.height, ctx.width), groups=int(self.ratio * ctx.dim))

        def build(self, ctx):
            from torch import nn

            return nn.Conv2d(ctx.dim, ctx.dim, 3, padding=1, groups=int(self.ratio * ctx.dim))

    report = check_mixer("squeezed_unchecked", quick=True)
    failed = {r.where: r.detail for r in report.failed}
    assert {r.check for r in report.failed} == {"hostile values"}, report.table()
    assert "mixers.X.ratio = 1e-09" in failed and "ZeroDivisionError" in failed["mixers.X.ratio = 1e-09"]
    hostile = {r.where: r.status for r in report.results if r.check == "hostile values"}
    assert hostile["mixers.X.ratio = -1.0"] == "refused"   # PositiveFloat: located by the schema

    @register_mixer
    class SqueezedChecked(Squeezed):
        type: Literal["squeezed_checked"] = "squeezed_checked"

        def check(self, ctx):
            groups = int(self.ratio * ctx.dim)
            if groups < 1 or ctx.dim % groups:
                raise MixerCheckError(f"ratio {self.ratio} gives {groups} groups of width {ctx.dim}", "ratio")

    from composer.conformance import hostile_cases, try_hostile

    outcomes = [try_hostile(text) for _, text in hostile_cases("mixer", "squeezed_checked")]
    assert "FAIL" not in {status for status, _ in outcomes}, outcomes
    assert any(status == "refused" and "mixers.X.ratio: stage 0 (X, width 8" in detail and "gives 0 groups" in detail
               for status, detail in outcomes), outcomes


def test_a_claim_of_torchscript_is_tested(registry):
    @register_mixer
    class Unscriptable(_DepthwiseBase):
        type: Literal["unscriptable"] = "unscriptable"

        def build(self, ctx):
            from torch import nn

            class Mixer(nn.Module):
                def __init__(self, dim):
                    super().__init__()
                    self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

                def forward(self, x):
                    return self.conv(*[x][:1], **{})  # star-args: TorchScript cannot compile this

            return Mixer(ctx.dim)

    report = check_mixer("unscriptable", macros=["metaformer"])
    assert [r.check for r in report.failed] == ["torchscript"], report.table()
    Unscriptable.torchscript = False
    report = check_mixer("unscriptable", macros=["metaformer"])
    assert report.ok
    assert [r.status for r in report.results if r.check == "torchscript"] == ["skipped"]


def test_unknown_names_get_a_did_you_mean(capsys):
    from composer.cli import main

    assert main(["check-mixer", "Hxp"]) == 2
    err = capsys.readouterr().err
    assert "unknown mixer symbol or type 'Hxp'" in err and "did you mean 'Hpx'?" in err
    assert main(["check-mixer", "Conv", "--macro", "metaformr"]) == 2
    assert "unknown macro 'metaformr'; did you mean 'metaformer'?" in capsys.readouterr().err
