"""One registry for every extension point (composer/registry.py): registering after import (a notebook) reaches
the schema, validation, planning, building, counting, search spaces and the docs catalogue; names taken twice are
refused naming who took them; user objectives (``--objective module:function``, ``run(objective=f)``) report
intermediate values to Optuna's pruner and fail only their own trial; composer/ has no import circles."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Literal

import pytest

import composer
from composer.cost_types import Cost, conv_cost
from composer.mixers import MIXERS, MixerConfig, register_mixer, register_symbol
from composer.registry import MACROS, RegistryError, isolated, register_weight_source

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry():
    with isolated():
        yield


def _register_toy():
    @register_mixer
    class ToyConfig(MixerConfig):
        """A depthwise conv under a new name."""

        type: Literal["toy_dw"] = "toy_dw"
        kernel_size: int = 5
        summary = "toy depthwise conv"
        paper = "a test"
        cost_formula = "params k²C + C; MACs N·k²C"

        def cost(self, ctx):
            return conv_cost(ctx.dim, ctx.dim, self.kernel_size, (ctx.height, ctx.width), groups=ctx.dim)

        def build(self, ctx):
            from torch import nn

            return nn.Conv2d(ctx.dim, ctx.dim, self.kernel_size, padding=self.kernel_size // 2, groups=ctx.dim)

    register_symbol("Toy", "toy_dw", doc="toy")
    return ToyConfig


def test_registration_after_import_reaches_every_command(registry, tmp_path):
    composer.estimate("caformer_s18")  # the schema exists before the registration
    _register_toy()
    assert MIXERS.origin("toy_dw") == __name__
    spec = composer.load_spec({"extends": "caformer_s18", "layout": "Toy-Toy-A-A",
                               "mixers": {"Toy": {"kernel_size": [3, 5, 7, 9]}}})
    est = composer.estimate(spec)
    assert est.params == sum(p.numel() for p in composer.compose(spec).parameters())
    from composer.cost import count_macs

    assert count_macs(spec).macs == est.macs
    with pytest.raises(composer.SpecError, match=r"<string>:4: mixers.Toy.kernel_sise: unknown field 'kernel_sise'"
                                                 r"; did you mean 'kernel_size'\?"):
        composer.load_spec("extends: caformer_s18\nlayout: Toy-Toy-A-A\nmixers:\n  Toy: {kernel_sise: 3}\n")
    from composer.schema import spec_schema

    assert "ToyConfigOverride" in spec_schema()["definitions"]
    from composer.catalogue import render

    assert "## `toy_dw`" in render() and f"registered by:** {__name__}" in render()
    from composer.search import load_space

    space = load_space({"base": "caformer_s18", "choices": {"layout": [["Conv", "Toy"]] * 2 + [["A"]] * 2,
                                                             "mixers.Toy.kernel_size": [3, 7]},
                        "budget": {"macs": "6G"}})
    assert [c.key for c in space.choices] == ["layout", "mixers.Toy.kernel_size"]
    data, _ = space.sample(lambda name, domain: domain.options[-1] if hasattr(domain, "options") else domain.low)
    assert space.check(data).error is None and str(data["layout"]).startswith("Toy")


def test_the_schema_forgets_what_isolated_registered():
    with isolated():
        _register_toy()
        composer.load_spec("extends: caformer_s18\nlayout: Toy-Toy-A-A\n")
    assert "toy_dw" not in MIXERS
    with pytest.raises(composer.SpecError, match="unknown mixer symbol 'Toy'"):
        composer.load_spec("extends: caformer_s18\nlayout: Toy-Toy-A-A\n")
    with pytest.raises(composer.SpecError, match="unknown mixer type 'toy_dw'"):
        composer.load_spec("extends: caformer_s18\nlayout: T-T-A-A\nmixers:\n  T: {type: toy_dw}\n")


def test_names_taken_twice_and_incomplete_configs_are_refused(registry):
    class Again(MixerConfig):
        type: Literal["sep_conv"] = "sep_conv"

        def cost(self, ctx):
            return Cost()

        def build(self, ctx):
            return None

    with pytest.raises(RegistryError, match="mixer type 'sep_conv' is already registered by composer"):
        register_mixer(Again)
    with pytest.raises(RegistryError, match="layout symbol 'Conv' is already registered by composer"):
        register_symbol("Conv", "dw_conv")

    class NoCost(MixerConfig):
        type: Literal["no_cost"] = "no_cost"

    with pytest.raises(RegistryError, match=r"NoCost must define cost\(ctx\) and build\(ctx\)"):
        register_mixer(NoCost)
    with pytest.raises(RegistryError, match="unknown macro 'metaformr'; did you mean 'metaformer'"):
        MACROS.lookup("metaformr")


def test_a_registered_channel_mixer_validates_and_builds(registry):
    from composer.channel import ChannelConfig, register_channel_mixer
    from composer.cost_types import linear_cost

    @register_channel_mixer
    class NarrowMlp(ChannelConfig):
        type: Literal["narrow_mlp"] = "narrow_mlp"
        ratio: float = 1.0

        def cost(self, dim, tokens):
            hidden = int(self.ratio * dim)
            return linear_cost(dim, hidden, tokens) + linear_cost(hidden, dim, tokens)

        def build(self, dim, layout):
            from torch import nn

            hidden = int(self.ratio * dim)
            conv = layout == "channels_first"
            make = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
            return nn.Sequential(make(dim, hidden), nn.GELU(), make(hidden, dim))

    spec = composer.load_spec({"extends": "convformer_s18", "channel_mixer": {"type": "narrow_mlp", "ratio": 2.0}})
    assert composer.estimate(spec).params == sum(p.numel() for p in composer.compose(spec).parameters())
    with pytest.raises(composer.SpecError, match="channel_mixer.ratoi: unknown field 'ratoi'; did you mean 'ratio'"):
        composer.load_spec({"extends": "convformer_s18", "channel_mixer": {"type": "narrow_mlp", "ratoi": 2.0}})


def test_a_registered_weight_source_loads_checkpoints(registry):
    from composer import weights

    model = composer.compose("identityformer_s12")
    register_weight_source("my_lab", lambda state: {k.removeprefix("module."): v for k, v in state.items()})
    weights.load(model, {"module." + k: v for k, v in model.state_dict().items()}, source="my_lab")
    with pytest.raises(weights.WeightsError, match="unknown weight source 'my_lb'; did you mean 'my_lab'"):
        weights.load(model, model.state_dict(), source="my_lb")


# -- objectives ------------------------------------------------------------------------------------------------

USER_OBJECTIVES = '''
import itertools

calls = itertools.count()


def staged(model, spec, reporter):
    """10 at every step for the first two trials, 0 after: the median pruner stops the third at step 0."""
    n = next(calls)
    value = 10.0 if n < 2 else 0.0
    for step in range(3):
        reporter.report(value, step)
    return value


staged.direction = "maximize"


def broken(model, spec, reporter):
    raise ValueError("the user's data is missing")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_evals.py").write_text(USER_OBJECTIVES)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    import sys

    sys.modules.pop("user_evals", None)


def _search(*args: str) -> int:
    from composer.cli import main

    return main(["search", "--budget", "5GFLOPs", "--no-progress", *args])


def test_module_function_objective_reports_steps_and_is_pruned_by_the_median_pruner(user_module, registry):
    import optuna

    assert _search("--trials", "3", "--objective", "user_evals:staged", "--run-dir", "run") == 0
    study = optuna.load_study(study_name="metaformer_s18-user_evals_staged", storage="sqlite:///run/study.db")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "PRUNED"], states
    assert study.trials[2].intermediate_values == {0: 0.0}
    assert study.trials[0].intermediate_values == {0: 10.0, 1: 10.0, 2: 10.0}
    assert study.trials[0].user_attrs["objective_value"] == 10.0
    assert "user_evals:staged" in (Path("run") / "trials.csv").read_text().splitlines()[0] or \
        "value" in (Path("run") / "trials.csv").read_text()


def test_an_error_in_the_objective_fails_its_trial_and_the_search_goes_on(user_module, registry, capsys):
    import optuna

    code = _search("--trials", "2", "--objective", "user_evals:broken", "--direction", "minimize", "--run-dir", "run")
    assert code == 1  # every trial failed in the objective: not what was asked
    out = capsys.readouterr()
    assert out.out.count("failed in objective user_evals:broken: ValueError: the user's data is missing (at ") == 2
    assert "Traceback" not in out.err and "Trial 0 failed" not in out.err
    study = optuna.load_study(study_name="metaformer_s18-user_evals_broken", storage="sqlite:///run/study.db")
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert study.trials[0].user_attrs["error"].startswith("ValueError: the user's data is missing")


@pytest.mark.parametrize("objective, extra, message", [
    ("no_such_module:f", [], "--objective no_such_module:f: cannot import no_such_module (ModuleNotFoundError"),
    ("user_evals:nothing", [], "--objective user_evals:nothing: user_evals has no 'nothing'"),
    ("user_evals:broken", [], "say whether to maximize or minimize it: --direction maximize"),
    ("user_evals:calls", ["--direction", "maximize"], "calls is a count, not a function"),
    ("naswto", [], "unknown objective 'naswto'; did you mean 'naswot'?"),
    ("user_evals:staged,train", [], "one model-evaluating objective at a time"),
])
def test_objective_problems_are_usage_errors_before_any_trial(user_module, registry, capsys, objective, extra,
                                                              message):
    assert _search("--trials", "1", "--objective", objective, *extra, "--run-dir", "run") == 2
    assert message in capsys.readouterr().err
    assert not (user_module / "run" / "study.db").exists()


def test_a_space_file_names_registered_objectives_only(user_module, registry, capsys):
    (user_module / "space.yaml").write_text("base: caformer_s18\nchoices:\n  depths: [[1, 2], [1], [1], [1]]\n"
                                            "budget: {macs: 5G}\nobjective: user_evals:staged\n")
    from composer.cli import main

    assert main(["search", "space.yaml", "--trials", "1", "--no-progress"]) == 2
    assert ("space.yaml:5: objective: objective 'user_evals:staged': a module:function objective is a command-line "
            "argument (--objective)") in capsys.readouterr().err


def test_run_takes_a_function(user_module, registry):
    from composer.search import run

    def last_width(model, spec, reporter):
        return float(spec.widths[-1])

    result = run("metaformer_s18", budget="5G", trials=2, objective=last_width, direction="maximize",
                 progress=False, run_dir="fn", log=lambda *a: None)
    assert [t.state.name for t in result.study.trials] == ["COMPLETE", "COMPLETE"]
    assert result.settings.objectives == [f"{__name__}:test_run_takes_a_function.<locals>.last_width"]
    with pytest.raises(composer.SpecError, match="--workers > 1 start processes that import the objective"):
        run("metaformer_s18", budget="5G", trials=2, objective=last_width, direction="maximize", workers=2,
            progress=False, run_dir="fn2", log=lambda *a: None, argv=[])


# -- import circles --------------------------------------------------------------------------------------------

def _imports(path: Path, package: list[str]) -> set[str]:
    """composer modules ``path`` imports anywhere (module level or inside functions; not under TYPE_CHECKING)."""
    found: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("composer"))
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(package[: len(package) - child.level + 1] + ([child.module] if child.module else [])) \
                    if child.level else (child.module or "")
                if base.startswith("composer"):
                    found.update(f"{base}.{a.name}" for a in child.names)
                    found.add(base)
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_import_circles_in_composer():
    modules: dict[str, tuple[Path, list[str]]] = {}
    for path in (ROOT / "composer").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = (path, package if parts[-1] != "__init__" else parts[:-1])
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        targets = set()
        for imported in _imports(path, package):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + ".") and imported != "composer":
                targets.add(imported)
        graph[name] = targets
    # Tarjan-free check: a circle is a module reachable from itself
    circles = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node == start:
                circles.append(start)
                break
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
    assert circles == [], f"modules on an import circle: {sorted(circles)}"


def test_the_user_objective_module_is_documented():
    text = textwrap.dedent(composer.search.objectives.__doc__ or "") if hasattr(composer.search, "objectives") else ""
    assert "function(model, spec, reporter)" in (text or (ROOT / "composer/search/objectives.py").read_text())
