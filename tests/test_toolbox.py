"""The researcher's toolbox: `composer schema`, `composer graph`, timm registration, ONNX / torch.compile,
`composer profile`."""

import importlib.util
import json
import re

import jsonschema
import networkx as nx
import pytest
import torch
import yaml

from composer import estimate, plan
from composer.mixers import MIXERS
from composer.spec import SpecError, load_spec
from composer.spec.source import preset_names

from conftest import ROOT, SPECS

TINY = """\
name: tiny
input_size: 32
num_classes: 10
widths: [16, 32]
depths: [1, 2]
layout: Conv-A
mixers:
  A: {head_dim: 8}
"""


# ------------------------------------------------------------------------------------------------------------
# composer schema


@pytest.fixture(scope="module")
def spec_validator(tmp_path_factory):
    from composer.cli import main

    out = tmp_path_factory.mktemp("schema") / "spec.schema.json"
    assert main(["schema", "--output", str(out)]) == 0
    schema = json.loads(out.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _raw(path):
    return yaml.safe_load(path.read_text())


def test_schema_validates_every_spec_file_as_written(spec_validator):
    files = sorted(SPECS.glob("*.yaml"))
    assert len(files) >= 30 and any("extends" in _raw(f) for f in files) and any("ensemble" in _raw(f) for f in files)
    problems = {f.name: [e.message for e in spec_validator.iter_errors(_raw(f))] for f in files}
    assert {name: msgs for name, msgs in problems.items() if msgs} == {}


def test_schema_prints_the_same_schema_and_covers_every_registered_mixer(run_cli, spec_validator):
    code, out, _ = run_cli("schema")
    assert code == 0
    schema = json.loads(out)
    assert schema == spec_validator.schema
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    defs = schema["definitions"]
    assert defs["TypedMixer"]["properties"]["type"]["enum"] == sorted(MIXERS)
    # editors show the mixer's real defaults, not the override model's "not given"
    conv = defs["SepConvConfigOverride"]["properties"]
    assert conv["kernel_size"]["default"] == 7 and conv["act1"]["default"] == "star_relu"
    assert "MetaFormer" in defs["SepConvConfigOverride"]["description"]
    mixers = defs["RawSpec"]["properties"]["mixers"]["properties"]
    assert {"Conv", "A", "M", "Hpx", "gnConv"} <= set(mixers)


VALID = {
    "shorthands": "widths: [8]\ndepths: [1]\nlayout: Conv\nhead: linear\nnorm: layernorm_nobias\n"
                  "channel_mixer: {ratio: 2}",
    "known symbol, partial, empty": "widths: [8, 16]\ndepths: [1, 1]\nlayout: Conv-DW\n"
                                    "mixers: {Conv: {kernel_size: [3, 5]}, DW: }",
    "new symbol with a type": "widths: [8]\ndepths: [1]\nlayout: C5\nmixers: {C5: {type: sep_conv, kernel_size: 5}}",
    "extends without widths": "extends: caformer_s18\nlayout: Conv-Conv-Conv-A\nhead: {hidden_drop: 0.4}",
    "per-block layout": "widths: [8, 16]\ndepths: [2, 1]\nlayout: [[Conv, Pool], Conv]\nres_scale: [null, 1.0]",
    "ensemble shorthand": "ensemble: Hpx/Conv\nsize: s18\nnum_classes: 10",
    "inline ensemble": "ensemble: [convformer_s18, {extends: caformer_s18, drop_path_rate: 0.1}]",
}

INVALID = {
    "unknown field": ("widths: [8]\ndepths: [1]\nlayout: Conv\nwidht: 3", "'widht' was unexpected"),
    "missing layout": ("widths: [8]\ndepths: [1]", "'layout' is a required property"),
    "unknown mixer parameter": ("widths: [8]\ndepths: [1]\nlayout: Conv\nmixers: {Conv: {kernel: 3}}",
                                "is not valid under any of the given schemas"),
    "new symbol without type": ("widths: [8]\ndepths: [1]\nlayout: C5\nmixers: {C5: {kernel_size: 3}}",
                                "'type' is a required property"),
    "unknown mixer type": ("widths: [8]\ndepths: [1]\nlayout: C5\nmixers: {C5: {type: sep_cnv}}",
                           "'sep_cnv' is not one of"),
    "parameter of another type": ("widths: [8]\ndepths: [1]\nlayout: C\nmixers: {C: {type: sep_conv, head_dim: 8}}",
                                  "'head_dim' was unexpected"),
    "bad norm shorthand": ("widths: [8]\ndepths: [1]\nlayout: Conv\nnorm: layernrm",
                           "is not valid under any of the given schemas"),
    "non-integer width": ("widths: [a]\ndepths: [1]\nlayout: Conv", "'a' is not of type 'integer'"),
    "kernel size 0": ("widths: [8]\ndepths: [1]\nlayout: Conv\nmixers: {Conv: {kernel_size: 0}}",
                      "is not valid under any of the given schemas"),
    "one-member ensemble": ("ensemble: [caformer_s18]", "is not valid under any of the given schemas"),
    "ensemble with widths": ("ensemble: [caformer_s18, convformer_s18]\nwidths: [8]", "'widths' was unexpected"),
}


@pytest.mark.parametrize("text", VALID.values(), ids=VALID.keys())
def test_schema_accepts_what_the_loader_accepts(spec_validator, text):
    assert [e.message for e in spec_validator.iter_errors(yaml.safe_load(text))] == []
    load_spec(text)


@pytest.mark.parametrize("text, message", INVALID.values(), ids=INVALID.keys())
def test_schema_rejects_what_the_loader_rejects(spec_validator, text, message):
    errors = [e.message for e in spec_validator.iter_errors(yaml.safe_load(text))]
    assert any(message in e for e in errors), errors
    with pytest.raises(SpecError):
        load_spec(text)


def test_search_space_schema_validates_search_files_and_unit_strings(run_cli):
    code, out, _ = run_cli("schema", "--search-space")
    assert code == 0
    schema = json.loads(out)
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    files = sorted((ROOT / "search").glob("*.yaml"))
    assert files and all(list(validator.iter_errors(_raw(f))) == [] for f in files)
    space = {"base": "caformer_s18", "choices": {"depths": [[2, 3], [2, 3], [6, 9], [2, 3]]}}
    from composer.spec import parse_count

    for macs in ("5GFLOPs", "4.1G", "30M", "800K params", "1.5e9", 5e9, "2 gmacs"):
        assert list(validator.iter_errors({**space, "budget": {"macs": macs}})) == [], macs
        parse_count(macs)  # the loader reads every unit string the schema admits
    for macs in ("5 GB", "lots", "-1G", -3):
        assert list(validator.iter_errors({**space, "budget": {"macs": macs}})), macs
        with pytest.raises(ValueError):
            parse_count(macs)


# ------------------------------------------------------------------------------------------------------------
# composer graph


def test_graph_writes_a_png_of_caformer(run_cli, tmp_path):
    out = tmp_path / "x.png"
    code, _, err = run_cli("graph", SPECS / "caformer_s18.yaml", "-o", out)
    assert code == 0 and "wrote" in err
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(out)
    assert image.shape[0] > 300 and image.shape[1] > 1000  # six columns: stem, 4 stages, head


def test_graph_columns_group_equal_blocks():
    from composer.graph import columns

    cols = columns(plan("caformer_s18"))
    assert [c.title for c in cols] == ["stem", "stage 0", "stage 1", "stage 2", "stage 3", "head"]
    stage2 = cols[3]
    assert [(b.title, b.count, b.shape) for b in stage2.boxes] == [("downsample", 1, "320x14x14"),
                                                                   ("A", 9, "320x14x14")]
    assert stage2.boxes[1].detail == "attention head_dim=32"
    assert stage2.cost == estimate("caformer_s18").stages[2].cost
    assert sum((c.cost for c in cols[1:-1]), cols[0].cost).params + cols[-1].cost.params == 26_341_656


def test_graphml_and_dot_round_trip(run_cli, tmp_path):
    p = plan("caformer_s18")
    code, _, _ = run_cli("graph", "caformer_s18", "-o", tmp_path / "x.graphml")
    assert code == 0
    g = nx.read_graphml(tmp_path / "x.graphml")
    assert g.number_of_nodes() == p.graph.number_of_nodes() == 27
    assert g.number_of_edges() == p.graph.number_of_edges()
    block = g.nodes["stages.2.blocks.0"]
    assert (block["symbol"], block["mixer_type"], block["out_shape"]) == ("A", "attention", "320x14x14")
    assert block["params"] == p.node("stages.2.blocks.0")["cost"].params
    assert json.loads(block["mixer_config"])["head_dim"] == 32
    assert sum(d["params"] for _, d in g.nodes(data=True) if d["kind"] != "stage") == 26_341_656

    code, dot, _ = run_cli("graph", "caformer_s18")  # no -o: DOT on stdout
    assert code == 0 and dot.startswith('digraph "caformer_s18" {')
    flow = [e for e in p.graph.edges(data="relation") if e[2] == "flow"]
    assert dot.count(" -> \"") == len(flow) == 22
    assert dot.count("subgraph \"cluster_stages.") == 4
    assert '"stages.0.blocks.0" [label="stages.0.blocks.0\\nConv (sep_conv)' in dot
    (tmp_path / "x.dot").write_text(dot)
    assert run_cli("graph", "caformer_s18", "-o", tmp_path / "y.dot")[0] == 0
    assert (tmp_path / "y.dot").read_text() == dot


def test_graph_of_an_ensemble(tmp_path):
    from composer.graph import export_graph, write

    p = plan("ensemble_hpx_conv_s18")
    g = export_graph(p)
    assert g.number_of_nodes() == sum(m.graph.number_of_nodes() for m in p.members)
    assert "members.1.stages.3.blocks.2" in g
    svg = write(p, tmp_path / "e.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "hpxformer_s18" in svg and "convformer_s18" in svg


@pytest.mark.parametrize("args, message", [
    (("graph", "caformer_s18", "-o", "{tmp}/x.txt"), "cannot tell the format of"),
    (("graph", "caformer_s18", "-o", "{tmp}/missing/x.png"), "folder {tmp}/missing does not exist"),
    (("graph", "{tmp}/nope.yaml", "-o", "{tmp}/x.png"), "no such file"),
    (("schema", "-o", "{tmp}"), "is a folder"),
    (("profile", "caformer_s18", "--batch-sizes", "1,x"), "--batch-sizes must be positive integers"),
    (("profile", "caformer_s18", "--batch-sizes", "0"), "--batch-sizes must be positive integers"),
    (("profile", "caformer_s18", "--iters", "0"), "--iters >= 1"),
    (("profile", "caformer_s18", "--device", "tpu"), "device"),
])
def test_bad_arguments_exit_2_with_a_message(run_cli, tmp_path, args, message):
    code, out, err = run_cli(*(a.format(tmp=tmp_path) for a in args))
    assert code == 2 and err.startswith("error: ") and message.format(tmp=tmp_path) in err
    assert "Traceback" not in err and not (tmp_path / "x.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_profile_on_cuda_without_a_gpu_is_a_usage_error(run_cli):
    code, _, err = run_cli("profile", "caformer_s18", "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


# ------------------------------------------------------------------------------------------------------------
# timm


def test_every_preset_is_a_timm_model():
    import timm

    # every preset, and composer_spec (any spec: what a composer train bundle's config.json names)
    assert set(timm.list_models("composer_*")) == {f"composer_{n}" for n in preset_names()} | {"composer_spec"}
    assert {"composer_caformer_s18", "composer_chpxformer_s18"} <= set(timm.list_models("composer_*"))


def test_timm_create_model_builds_the_preset():
    import timm

    model = timm.create_model("composer_caformer_s18", pretrained=False)
    assert sum(t.numel() for t in model.parameters()) == 26_341_656
    assert model.pretrained_cfg["input_size"] == (3, 224, 224) and model.name == "caformer_s18"
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg["input_size"] == (3, 224, 224) and cfg["interpolation"] == "bicubic"


def test_timm_kwargs_map_to_spec_fields():
    import timm

    model = timm.create_model("composer_chpxformer_s18", num_classes=10, img_size=64, drop_path_rate=0.3,
                              drop_rate=0.25, in_chans=1)
    expected = estimate({"extends": "chpxformer_s18", "num_classes": 10, "input_size": 64, "in_chans": 1})
    frozen = sum(b.numel() for name, b in model.named_buffers() if name.endswith("distance_map"))
    assert frozen > 0   # timm's convention: the official code's frozen distance maps are buffers here
    assert sum(t.numel() for t in model.parameters()) + frozen == expected.params
    assert model.pretrained_cfg["input_size"] == (1, 64, 64) and model.num_classes == 10
    assert model.stages[3].blocks[2].drop_path1.drop_prob == pytest.approx(0.3)
    model.eval()
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    # any spec field, merged over the preset
    small = timm.create_model("composer_identityformer_s12", depths=[1, 1, 1, 1], num_classes=0)
    assert len(small.stages[2].blocks) == 1 and small.num_classes == 0
    ens = timm.create_model("composer_ensemble_hpx_conv_s18", num_classes=5, img_size=64)
    assert type(ens).__name__ == "ComposedEnsemble" and ens.num_classes == 5


@pytest.mark.parametrize("kwargs, error, message", [
    ({"pretrained": True}, ValueError, "no downloadable weights; give the file"),
    ({"widhts": [1]}, TypeError, "unexpected keyword argument(s) widhts"),
    ({"global_pool": "max"}, ValueError, "global_pool='max' is not supported"),
    ({"global_pool": "max", "features_only": True}, ValueError, "global_pool='max' is not supported"),
    ({"depths": [1, 2]}, SpecError, "has 2 stages but widths has 4"),
])
def test_timm_refuses_what_it_cannot_do(kwargs, error, message):
    import timm

    with pytest.raises(error, match=re.escape(message)):
        timm.create_model("composer_caformer_s18", **kwargs)


# ------------------------------------------------------------------------------------------------------------
# ONNX and torch.compile


def test_caformer_s18_exports_to_onnx_and_computes_the_same_logits(tmp_path):
    """torch.onnx.export's default (dynamo) exporter; the file passes onnx.checker and onnx's reference
    evaluator (pure numpy, so no onnxruntime needed) reproduces the PyTorch logits."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from composer import compose

    torch.manual_seed(0)
    model = compose("caformer_s18").eval()
    x = torch.randn(1, 3, 224, 224)
    path = tmp_path / "caformer_s18.onnx"
    torch.onnx.export(model, (x,), path, input_names=["images"], output_names=["logits"], dynamo=True,
                      verbose=False)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [dims(v) for v in proto.graph.input] == [[1, 3, 224, 224]]
    assert [dims(v) for v in proto.graph.output] == [[1, 1000]]
    assert {"Conv", "MatMul", "Softmax"} <= {n.op_type for n in proto.graph.node}  # SepConv and attention
    with torch.no_grad():
        expected = model(x)
    (out,) = ReferenceEvaluator(proto).run(None, {"images": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)
    if importlib.util.find_spec("onnxruntime") is not None:  # not a dependency: run it only where installed
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (out,) = session.run(None, {"images": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_caformer_s18_runs_under_torch_compile():
    """Inductor on CPU: minutes on two cores, so deselected by default (pyproject: -m "not slow"); -m slow runs it."""
    from composer import compose

    torch.manual_seed(0)
    model = compose("caformer_s18").eval()
    x = torch.randn(2, 3, 224, 224)
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------------------
# composer profile


def test_profile_a_tiny_spec_on_cpu(run_cli, write_spec):
    path = write_spec(TINY)
    code, out, err = run_cli("profile", path, "--batch-sizes", "1,4", "--device", "cpu", "--warmup", "1",
                             "--iters", "3")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("tiny  (") and "input 32x32" in lines[0] and "cpu" in lines[0]
    assert lines[1].split() == ["batch", "latency", "ms", "min", "ms", "img/s", "GMACs/img", "GMAC/s"]
    rows = [line.split() for line in lines[3:5]]
    assert [r[0] for r in rows] == ["1", "4"]
    est = estimate(path)
    for batch, latency, minimum, per_s, gmacs, gmac_s in ((int(r[0]), *map(float, r[1:])) for r in rows):
        assert latency > 0 and 0 < minimum <= latency and per_s > 0 and gmac_s > 0
        assert per_s == pytest.approx(batch / latency * 1e3, rel=0.02)
        assert gmacs == pytest.approx(est.macs / 1e9, abs=5e-4)  # GMACs to three decimals, as every table
        assert gmac_s == pytest.approx(est.macs * batch / latency / 1e6, rel=0.02, abs=1e-3)


def test_profile_no_specialize_times_the_general_build(run_cli, monkeypatch):
    import composer.composed as composed

    built = []
    build = composed.build
    monkeypatch.setattr(composed, "build", lambda *a, **k: built.append(k.get("specialize", True)) or build(*a, **k))
    small = '{"extends": "convformer_s18", "widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1], "input_size": 32}'
    for flags, specialized in (((), True), (("--no-specialize",), False)):
        code, out, err = run_cli("profile", small, "--batch-sizes", "2", "--device", "cpu", "--warmup", "0",
                                 "--iters", "1", *flags)
        assert code == 0, err
        assert built[-1] is specialized and ("general build" in out.splitlines()[0]) is not specialized


def test_profile_function_at_another_input_size():
    from composer.profile import profile

    result = profile(TINY, batch_sizes=(2,), device="cpu", input_size=64, warmup=0, iters=1)
    assert result.input_size == 64 and result.device == "cpu" and len(result.timings) == 1
    timing = result.timings[0]
    assert timing.macs == estimate({**yaml.safe_load(TINY), "input_size": 64}).macs
    assert timing.throughput == pytest.approx(2 / (timing.latency_ms / 1e3))
