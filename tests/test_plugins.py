"""Plugins through entry points, without pip: a distribution is a ``*.dist-info`` folder with an
``entry_points.txt`` on ``sys.path`` (what ``importlib.metadata`` reads), here a temporary folder given to a fresh
interpreter through PYTHONPATH. A plugin that fails to import, or registers a name that is taken, is skipped whole
with a warning naming it; composer keeps working. (tests/test_install.py pip-installs the real example plugin.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD = '''
from typing import Literal
from composer.cost_types import conv_cost
from composer.mixers import MixerConfig, register_mixer, register_symbol

@register_mixer
class ShiftConfig(MixerConfig):
    """A depthwise 5x5 conv under another name (a stand-in for a researcher's operator)."""
    type: Literal["toy_dw5"] = "toy_dw5"
    summary = "toy depthwise 5x5"
    paper = "none (a test)"
    cost_formula = "params 25C + C; MACs 25NC"

    def cost(self, ctx):
        return conv_cost(ctx.dim, ctx.dim, 5, (ctx.height, ctx.width), groups=ctx.dim)

    def build(self, ctx):
        from torch import nn
        return nn.Conv2d(ctx.dim, ctx.dim, 5, padding=2, groups=ctx.dim)

register_symbol("Toy", "toy_dw5", doc="toy 5x5")
'''


def _distribution(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for module, text in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(text))


def _composer(site: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "composer.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _distribution(site, "toy_plugin", "[composer.mixers]\ntoy = toy_mixer\n", {"toy_mixer": GOOD})
    return site


def test_a_plugin_mixer_is_listed_validated_estimated_and_searched(site, tmp_path):
    listing = _composer(site, "list", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "  Toy      -> toy_dw5  toy 5x5" in listing.stdout
    assert "(registered by plugin 'toy' (toy_mixer, from toy_plugin 0.1))" in listing.stdout
    assert "composer.mixers          toy = toy_mixer  (toy_plugin 0.1; loaded)" in listing.stdout
    (tmp_path / "toy.yaml").write_text("extends: caformer_s18\nlayout: Toy-Toy-A-A\nmixers:\n  Toy: {kernl: 3}\n")
    bad = _composer(site, "validate", "toy.yaml", cwd=tmp_path)
    assert bad.returncode == 2
    assert "toy.yaml:4: mixers.Toy.kernl: unknown field 'kernl' allowed: type" in bad.stderr
    (tmp_path / "toy.yaml").write_text("extends: caformer_s18\nlayout: Toy-Tyo-A-A\n")
    typo = _composer(site, "validate", "toy.yaml", cwd=tmp_path)
    assert typo.returncode == 2 and "unknown mixer symbol 'Tyo'; did you mean 'Toy'?" in typo.stderr
    (tmp_path / "toy.yaml").write_text("extends: caformer_s18\nlayout: Toy-Toy-A-A\n")
    built = _composer(site, "build", "toy.yaml", "--count", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert "(matches the plan)" in built.stdout and "(+0.0000% vs plan)" in built.stdout


def test_a_plugin_that_fails_to_import_is_skipped_with_its_name(site, tmp_path):
    _distribution(site, "broken_plugin", "[composer.mixers]\nbroken = broken_mixer\n",
                  {"broken_mixer": "import numpy_that_is_not_installed\n"})
    out = _composer(site, "validate", "caformer_s18", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ("warning: plugin 'broken' (broken_mixer, from broken_plugin 0.1) was not loaded (ModuleNotFoundError: "
            "No module named 'numpy_that_is_not_installed'); composer goes on without it") in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    listing = _composer(site, "list", cwd=tmp_path)  # the other plugin still works
    assert "  Toy      -> toy_dw5" in listing.stdout and "NOT LOADED: ModuleNotFoundError" in listing.stdout


def test_a_plugin_that_takes_a_used_name_is_rolled_back_whole(site, tmp_path):
    clash = GOOD.replace('"toy_dw5"', '"toy_other"').replace('"Toy"', '"Toy2"') + textwrap.dedent('''
        class Again(ShiftConfig):
            type: Literal["sep_conv"] = "sep_conv"
        register_mixer(Again)
        ''')
    _distribution(site, "clash_plugin", "[composer.mixers]\nclash = clash_mixer\n", {"clash_mixer": clash})
    out = _composer(site, "list", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert ("warning: plugin 'clash' (clash_mixer, from clash_plugin 0.1) was not loaded (RegistryError: mixer type "
            "'sep_conv' is already registered by composer)") in out.stderr
    assert "toy_other" not in out.stdout and "Toy2" not in out.stdout  # its first registrations are undone
    assert "  Toy      -> toy_dw5" in out.stdout


def test_objective_and_weight_source_plugins(site, tmp_path):
    _distribution(site, "eval_plugin",
                  "[composer.objectives]\nwidth_score = my_evals:width_score\n"
                  "[composer.weight_sources]\nmy_lab = my_evals:rename\n",
                  {"my_evals": '''
                      def width_score(model, spec, reporter):
                          """The last stage's width (a stand-in for an evaluation on the user's data)."""
                          reporter.report(spec.widths[-1], 0)
                          return spec.widths[-1]
                      width_score.direction = "maximize"

                      def rename(state):
                          return {k.removeprefix("backbone."): v for k, v in state.items()}
                      '''})
    out = _composer(site, "search", "--objective", "width_score", "--trials", "2", "--no-progress",
                    "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "objective width_score" in out.stdout and "2 finished trials (2 complete" in out.stdout
    code = ("import torch, composer, composer.weights as w\n"
            "m = composer.compose('identityformer_s12')\n"
            "w.load(m, {'backbone.' + k: v for k, v in m.state_dict().items()}, source='my_lab')\n"
            "print('loaded')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    loaded = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert loaded.returncode == 0 and "loaded" in loaded.stdout, loaded.stderr
