"""composer.latency: the per-part table (reused across processes, a miss adds a row, a fingerprint change starts
another table), deterministic predictions given the table, the layout of each part's input, and the hard latency
budget of the search (an over-budget candidate is never built). Timings themselves are not asserted (machines
are noisy): benchmarks/latency_predictor.py measures the predictor's error."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import composer
from composer.latency import _ALLOCATOR_VARIABLES, LatencyTable, Predictor, _parts, fingerprint, parse_latency

ROOT = Path(__file__).resolve().parents[1]
TINY = {"name": "tiny", "macro": "metaformer", "input_size": 32, "num_classes": 10, "widths": [8, 16, 24, 32],
        "depths": [1, 1, 2, 1], "layout": "Conv-Conv-A-A", "mixers": {"A": {"head_dim": 8}}}

ALLOCATOR_VARIABLES = (*_ALLOCATOR_VARIABLES, "LD_PRELOAD")  # what the fingerprint's allocator reads


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_the_table_is_reused_across_processes(cache, tmp_path):
    (tmp_path / "tiny.yaml").write_text(composer.dump_spec(composer.load_spec(TINY)))
    env = {**os.environ, "COMPOSER_CACHE_DIR": str(cache)}

    def run():
        # --no-check: the table alone (the self-check may re-time parts on a busy machine: tested below)
        out = subprocess.run([sys.executable, "-m", "composer.cli", "latency", "tiny.yaml", "--threads", "1",
                              "--no-check"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out.stdout

    first, second = run(), run()
    assert "parts timed now" in first and "parts timed now" not in second
    total = [line for line in first.splitlines() if "predicted" in line]
    assert total and total == [line for line in second.splitlines() if "predicted" in line]
    tables = list((cache / "latency").glob("*.jsonl"))
    # one row per distinct part (the two attention blocks of stage 2 get the same input: one key), read back here
    keys = {p.key for p in Predictor(threads=1, folder=tables[0].parent).predict(TINY, measure_missing=False).parts}
    assert len(tables) == 1 and len(tables[0].read_text().splitlines()) == 1 + len(keys) == 1 + 9


def test_a_miss_times_only_the_new_part_and_adds_one_row(cache):
    p = Predictor(threads=1, repeats=1)
    first = p.predict(TINY)
    rows = len(p.table)
    assert first.measured_now == rows == len({part.key for part in first.parts})
    other = {**TINY, "mixers": {**TINY["mixers"], "Conv": {"kernel_size": [7, 5, 7, 7]}}}  # stage 1's block only
    second = p.predict(other)
    assert second.measured_now == 1 and len(p.table) == rows + 1
    assert [q.name for q in second.parts if q.measured_now] == ["stages.1.blocks.0"]
    assert len(p.table.path.read_text().splitlines()) == 1 + rows + 1


def test_prediction_is_deterministic_given_the_table(cache):
    p = Predictor(threads=1, repeats=1)
    ms = p.predict(TINY).ms
    again = Predictor(threads=1, repeats=1)  # a new process would read the same file
    assert again.predict(TINY, measure_missing=False).ms == ms == p.predict(TINY).ms
    assert again.measured == 0
    ensemble = {"ensemble": [TINY, {**TINY, "name": "tiny2"}]}
    assert again.predict(ensemble, measure_missing=False).ms == 2 * ms
    with pytest.raises(KeyError, match="is not in the latency table"):
        again.predict({**TINY, "widths": [8, 16, 24, 40]}, measure_missing=False)


def test_a_fingerprint_change_starts_another_table(cache, monkeypatch):
    base = Predictor(threads=1, repeats=1)
    base.predict(TINY)
    for other in (Predictor(threads=1, repeats=1, batch_size=2), Predictor(threads=2, repeats=1)):
        assert other.table.path != base.table.path and len(other.table) == 0
    import torch

    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    changed = Predictor(threads=1, repeats=1)
    assert changed.table.path != base.table.path and len(changed.table) == 0
    assert fingerprint(threads=1).torch == "0.0.0-other"


def test_timings_under_another_cpu_allocator_go_to_another_table(cache, monkeypatch):
    # glibc's malloc tuned by MALLOC_* (read at process start) or a preloaded jemalloc changes what a batch-8
    # forward costs on CPU (696-716 ms against 640 ms here): such timings must not mix with the default's.
    for variable in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    default = fingerprint(threads=1)
    assert default.allocator == "default"
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "100000000000")
    tuned = fingerprint(threads=1)
    assert tuned.allocator == "MALLOC_TRIM_THRESHOLD_=100000000000" and tuned.key != default.key
    assert "allocator MALLOC_TRIM_THRESHOLD_=100000000000" in tuned.describe()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")  # torch's CPU allocator asks for huge pages
    huge = fingerprint(threads=1)
    assert huge.allocator == "THP_MEM_ALLOC_ENABLE=1" and huge.key not in (default.key, tuned.key)
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    preloaded = fingerprint(threads=1)
    assert preloaded.allocator == "libjemalloc.so.2" and preloaded.key not in (default.key, tuned.key)
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libsomething_else.so")  # not an allocator: the default's table
    assert fingerprint(threads=1).key == default.key


@pytest.fixture
def denormals_restored():
    import torch

    yield
    torch.set_flush_denormal(False)


def test_timings_with_denormals_flushed_go_to_another_table(cache, denormals_restored):
    # caformer_b36's stem ran 2.1-2.4 ms or 9.2-11.5 ms per build with denormals kept, 2.0-2.7 ms with them
    # flushed: timings under the two settings must not mix, and composer only reads the setting.
    import torch

    from composer.latency import Fingerprint, flush_denormal

    kept = fingerprint(threads=1)
    assert not kept.flush_denormal and not flush_denormal()
    torch.set_flush_denormal(True)
    flushed = fingerprint(threads=1)
    assert flushed.flush_denormal and flushed.key != kept.key and "denormals flushed" in flushed.describe()
    torch.set_flush_denormal(False)
    assert fingerprint(threads=1) == kept
    # the field is left out of the key while off: tables timed before it existed keep their file (this literal
    # is the key of table version 6 without the field; a version bump changes it on purpose)
    assert Fingerprint("cpu", "Some CPU", 1, "2.14.1", "float32", 1, "contiguous").key == "a49420b5909d5d9b"


def test_flush_denormal_flag_reaches_the_table_and_the_study(cache, tmp_path, capsys, denormals_restored):
    from composer.cli import main
    from composer.latency import flush_denormal

    (tmp_path / "tiny.yaml").write_text(composer.dump_spec(composer.load_spec(TINY)))
    assert main(["latency", str(tmp_path / "tiny.yaml"), "--threads", "1", "--flush-denormal"]) == 0
    assert flush_denormal() and "denormals flushed" in capsys.readouterr().out
    assert _search(tmp_path, "--trials", "1", "--max-latency", "1000ms", "--flush-denormal") == 0
    import torch

    torch.set_flush_denormal(False)
    # the study's latency budget was predicted with denormals flushed: a rerun without the flag is refused
    assert _search(tmp_path, "--trials", "2", "--max-latency", "1000ms") == 2
    assert "latency_flush_denormal: True then, None now" in capsys.readouterr().err


GLIBC = platform.libc_ver()[0] == "glibc"


def _untuned_env(**extra) -> dict:
    """This process's environment with glibc's malloc at its defaults (plus ``extra``)."""
    return {**{k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}, **extra}


def _where_a_big_tensor_lies(code: str) -> str:
    """Run ``code`` in a fresh process with malloc's defaults (mallopt's settings cannot be undone), then say whether
    a new 100 MB tensor lies in the brk heap or in an mmap of its own."""
    probe = code + """
import torch
x = torch.empty(100 * 2**20, dtype=torch.uint8)
heap = [l.split()[0].split("-") for l in open("/proc/self/maps") if l.rstrip().endswith("[heap]")]
print("heap" if any(int(a, 16) <= x.data_ptr() < int(b, 16) for a, b in heap) else "mmap")
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env=_untuned_env())
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_makes_glibc_keep_big_tensors_in_its_heap():
    # with glibc's defaults a 100 MB block is mmapped, and unmapped again when freed (to be faulted in afresh on the
    # next forward); told to keep freed memory, malloc carves it from the heap it keeps
    assert _where_a_big_tensor_lies("") == "mmap"
    kept = ("from composer.latency import keep_freed_memory, fingerprint\nassert keep_freed_memory()\n"
            "assert fingerprint(threads=1).allocator == 'keep-freed-memory', fingerprint(threads=1)\n")
    assert _where_a_big_tensor_lies(kept) == "heap"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_keep_freed_memory_flag_times_into_a_table_of_its_own(cache, tmp_path):
    (tmp_path / "tiny.yaml").write_text(composer.dump_spec(composer.load_spec(TINY)))
    env = _untuned_env(COMPOSER_CACHE_DIR=str(cache))
    command = [sys.executable, "-m", "composer.cli", "latency", "tiny.yaml", "--threads", "1"]
    kept = subprocess.run([*command, "--keep-freed-memory"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert kept.returncode == 0, kept.stderr
    assert "allocator keep-freed-memory" in kept.stdout and "parts timed now" in kept.stdout
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "allocator" not in plain.stdout and "parts timed now" in plain.stdout
    assert len(list((cache / "latency").glob("*.jsonl"))) == 2
    # where malloc is not glibc's to tune, the flag is refused in one line, not ignored
    refused = subprocess.run([*command, "--keep-freed-memory"], cwd=tmp_path, capture_output=True, text=True,
                             env={**env, "LD_PRELOAD": "libjemalloc.so.2"}, timeout=300)
    assert refused.returncode == 2 and "--keep-freed-memory: this process's malloc is not glibc's" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_study_records_the_allocator_its_latency_budget_was_timed_under(cache, tmp_path, capsys, monkeypatch):
    import composer.latency

    # as after keep_freed_memory() (which cannot be undone in this process)
    monkeypatch.setattr(composer.latency, "_kept_freed_memory", True)
    for variable in ALLOCATOR_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert _search(tmp_path, "--trials", "1", "--max-latency", "1000ms") == 0
    assert "allocator keep-freed-memory" in capsys.readouterr().out
    monkeypatch.setattr(composer.latency, "_kept_freed_memory", False)
    assert _search(tmp_path, "--trials", "2", "--max-latency", "1000ms") == 2
    assert "latency_allocator: 'keep-freed-memory' then, None now" in capsys.readouterr().err


def test_a_damaged_row_is_timed_again_and_the_first_timing_wins(cache):
    p = Predictor(threads=1, repeats=1)
    p.predict(TINY)
    with open(p.table.path, "a") as handle:
        handle.write('{"key": "cut sho')  # a writer killed mid-line
    table = LatencyTable(p.fingerprint, p.table.path.parent)
    assert table.rows == p.table.rows
    key = next(iter(table.rows))
    assert table.add(key, 1e6, "a later timing") == p.table.rows[key]


def _contiguous_inputs_inside_the_model(spec, names) -> dict[str, bool]:
    """For each part, whether the built model hands it a tensor contiguous in memory."""
    import torch

    model = composer.compose(spec).eval()
    seen: dict[str, bool] = {}
    for name in names:
        model.get_submodule(name).register_forward_pre_hook(
            lambda module, args, name=name: seen.__setitem__(name, args[0].is_contiguous()))
    with torch.inference_mode():
        model(torch.randn(1, spec.in_chans, spec.input_size, spec.input_size))
    return seen


@pytest.mark.parametrize("source", [
    {**TINY, "input_size": 64, "layout": [["Conv"], ["Conv"], ["A", "Conv"], ["A"]]},  # SepConv NCHW, A NHWC
    {"extends": "u_dwconv_micro", "input_size": 64, "depths": [1, 1, 2, 1]},  # LayerNorms through a permute
    {"extends": "lowformer_b0", "input_size": 64, "depths": [0, 0, 1, 1, 1]},  # BatchNorm convs: all contiguous
])
def test_each_part_is_timed_with_its_input_laid_out_as_the_model_hands_it(source, tmp_path):
    # The same conv ran 3.1 ms on a contiguous input and 5.1 ms on a channels-last strided one: each part's input
    # must be laid out as the part before leaves it (U-DWConv's and the MetaFormers' LayerNorms hand on permuted
    # views), which the predictor learns from each part's output when it times it.
    from composer.latency import _input

    spec = composer.load_spec(source)
    predictor = Predictor(threads=1, repeats=1, folder=tmp_path)
    prediction = predictor.predict(spec)
    layouts = {p.name: (p.part.in_shape, p.layout) for p in _parts(spec)}
    timed = {p.name: _input(*layouts[p.name], p.permuted, predictor.fingerprint, "cpu").is_contiguous()
             for p in prediction.parts if p.name != "head"}
    assert timed == _contiguous_inputs_inside_the_model(spec, timed)
    again = Predictor(threads=1, repeats=1, folder=tmp_path).predict(spec)  # from the table: the same chain
    assert [p.permuted for p in again.parts] == [p.permuted for p in prediction.parts] and not again.measured_now
    permuted = [p.permuted for p in prediction.parts]
    if "macro" in source:  # the layout changes between Conv and A blocks, and the LayerNorms permute
        assert any(permuted) and not all(permuted)
    elif source["extends"] == "u_dwconv_micro":
        assert all(permuted[1:])  # everything after the stem gets a permuted view
    else:
        assert not any(permuted)


@pytest.mark.parametrize("text, ms", [("25ms", 25.0), ("25 ms", 25.0), ("0.5s", 500.0), ("800us", 0.8), (12, 12.0)])
def test_latency_units(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["0", "-3ms", "fast", "nan", "inf ms", True])
def test_bad_latencies_are_refused(text):
    with pytest.raises(ValueError, match="--max-latency"):
        parse_latency(text)


# -- the hard budget in the search -----------------------------------------------------------------------------

SPACE = """\
base:
  name: tiny
  macro: metaformer
  input_size: 32
  num_classes: 10
  widths: [8, 16, 24, 32]
  depths: [1, 1, 1, 1]
  layout: Conv-Conv-A-A
  mixers: {A: {head_dim: 8}}
choices:
  widths: [[8, 64], [16, 128], [24, 192], [32, 256]]
budget: {macs: 10G}
"""


def _search(tmp_path, *args):
    from composer.cli import main

    (tmp_path / "space.yaml").write_text(SPACE)
    return main(["search", str(tmp_path / "space.yaml"), "--no-progress", "--run-dir", str(tmp_path / "run"), *args])


def test_the_latency_budget_never_builds_an_over_budget_candidate(cache, tmp_path, monkeypatch, capsys):
    import optuna

    from composer.search import study as study_module

    built = []
    original = study_module.Searcher._build

    def spy(self, data, check):
        built.append(self.latency_ms[self._trial.number])
        return original(self, data, check)

    monkeypatch.setattr(study_module.Searcher, "_build", spy)
    # a budget between the smallest and the largest sample: both kinds occur in 12 trials
    small = Predictor().predict({**TINY, "depths": [1, 1, 1, 1]}).ms
    big = Predictor().predict({**TINY, "depths": [1, 1, 1, 1], "widths": [64, 128, 192, 256]}).ms
    budget = (small * big) ** 0.5
    assert _search(tmp_path, "--trials", "12", "--max-latency", f"{budget}ms") == 0
    out = capsys.readouterr().out
    assert f"{budget:g} ms predicted on cpu at batch 1" in out and "0 over-budget models built" in out
    study = optuna.load_study(study_name="space-proxy", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    trials = study.trials
    assert all("latency_ms_predicted" in t.user_attrs for t in trials)
    over = [t for t in trials if t.user_attrs["latency_ms_predicted"] > budget]
    under = [t for t in trials if t.user_attrs["latency_ms_predicted"] <= budget]
    assert over and under, [t.user_attrs["latency_ms_predicted"] for t in trials]
    assert all(not t.user_attrs["feasible"] and not t.user_attrs.get("built") for t in over)
    assert built and max(built) <= budget
    assert "latency_ms_predicted" in (tmp_path / "run" / "trials.csv").read_text().splitlines()[0]


def test_latency_budget_problems_are_usage_errors(cache, tmp_path, capsys):
    assert _search(tmp_path, "--trials", "1", "--max-latency", "0ms") == 2
    assert "--max-latency: a latency budget must be a positive, finite time, got '0ms'" in capsys.readouterr().err
    assert _search(tmp_path, "--trials", "1", "--batch-size", "0") == 2
    (tmp_path / "bad.yaml").write_text(SPACE.replace("budget: {macs: 10G}", "budget: {macs: 10G, latency: fast}"))
    from composer.cli import main

    assert main(["search", str(tmp_path / "bad.yaml"), "--trials", "1", "--no-progress"]) == 2
    assert "bad.yaml:12: budget.latency: expected a latency such as 25ms" in capsys.readouterr().err


def test_the_latency_objective_is_the_prediction_unless_measured(cache, tmp_path):
    import optuna

    assert _search(tmp_path, "--trials", "3", "--objective", "proxy,latency") == 0
    study = optuna.load_study(study_name="space-proxy-latency", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert done and all(t.values[1] == t.user_attrs["latency_ms_predicted"] for t in done)
    assert _search(tmp_path, "--trials", "2", "--objective", "latency", "--measure-latency",
                   "--run-dir", str(tmp_path / "measured")) == 0
    measured = optuna.load_study(study_name="space-latency", storage=f"sqlite:///{tmp_path / 'measured' / 'study.db'}")
    assert all(t.value == t.user_attrs["latency_ms"] and "latency_ms_predicted" not in t.user_attrs
               for t in measured.trials)


def test_each_block_is_timed_as_its_own_module_not_the_shared_costs_only_part():
    # The costs-only walk shares one Part among a stage's equal-cost blocks; Swin's odd blocks cost the same MACs
    # but roll the map and mask (2.3x the time of an even block here): the module timed for a key must be its own.
    from composer.nn.mixers.swin import ShiftedWindowAttention

    spec = composer.load_spec("u_swin_micro")
    parts = {p.name: p for p in _parts(spec)}
    model = composer.compose(spec)
    for name in ("stages.0.blocks.0", "stages.0.blocks.1", "stages.2.blocks.3", "stages.2.blocks.4"):
        built = [m for m in parts[name].part.build().modules() if isinstance(m, ShiftedWindowAttention)]
        inside = [m for m in model.get_submodule(name).modules() if isinstance(m, ShiftedWindowAttention)]
        assert [m.shift for m in built] == [m.shift for m in inside]
    assert [m.shift for m in parts["stages.0.blocks.1"].part.build().modules()
            if isinstance(m, ShiftedWindowAttention)] == [3]
    assert parts["stages.0.blocks.0"].description != parts["stages.0.blocks.1"].description


def test_each_timed_call_of_a_part_follows_the_eviction_writes_and_a_fresh_input():
    # A part inside a network finds its weights evicted by the rest of the forward and its input just written by
    # the previous part; timed hot in a loop it ran at 0.83-0.90x its time in the model. Every timed call must see
    # the eviction buffer rewritten since the last call and its input restored to the value the part was given.
    import torch

    from composer.latency import _time_cold_ms

    evict = torch.zeros(1024)
    x = torch.arange(6.0)
    seen = []

    def part(t):
        seen.append((float(evict[0]), float(evict[-1]), t.tolist()))
        t.mul_(2)  # a part that scribbles on its input: the next timed call must get the input back
        return t

    ms = _time_cold_ms(part, x, torch.device("cpu"), 4, evict)
    timed = seen[-4:]
    assert [(a, b) for a, b, _ in timed] == [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)]
    assert all(values == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] for _, _, values in timed)
    assert ms >= 0


def test_the_prepared_gpu_script_runs_here_on_the_cpu(tmp_path):
    # A GPU machine is lent for minutes now and then: the one script run there must not be the first to find a
    # break. benchmarks/gpu_run.sh --device cpu --quick runs every check of the GPU suite with tiny sizes.
    env = {**os.environ, "OUT": str(tmp_path), "COMPOSER_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_run.sh"), "--device", "cpu", "--quick"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    log = (tmp_path / "gpu_suite.log").read_text()
    for line in ("device: cpu", "predictor, batch 1:", "predictor, batch 2:", "throughput caformer_s18 fp32:",
                 "throughput convformer_s18 amp bf16 + channels_last:", "aggregated attention (transnext_micro",
                 "Hpx (hpxformer_s18", "convformer       32     8 train", "hornet           32     8 train",
                 "CPU training paths measured:",
                 "done in"):
        assert line in log, line
    assert f"from {ROOT / 'composer' / '__init__.py'}" in done.stdout  # composer from this source tree


# -- conditions, suspect parts, the self-check, --tables / --clear / --retime (issue 33) -------------------------

def _busy_children(n: int, seconds: float) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", f"import time\nend = time.time() + {seconds}\n"
                              "while time.time() < end: pass"]) for _ in range(n)]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="other processes' CPU time is read from /proc")
def test_other_processes_cpu_time_is_measured_and_marks_a_timing_suspect():
    from composer.latency import SUSPECT_OTHERS, Conditions, quiet_now

    children = _busy_children(2, 10)
    try:
        busy = quiet_now(1.0)  # this process sleeps: what the children (and the rest of the machine) took
    finally:
        for child in children:
            child.kill()
            child.wait()
    assert busy.others >= SUSPECT_OTHERS and busy.suspect and busy.load is not None and 0.9 < busy.seconds < 2
    assert not Conditions(0.3, 0.05, 0.0).suspect and Conditions(0.3, 0.05, SUSPECT_OTHERS).suspect
    assert Conditions.from_row(Conditions(1.5, 0.7, 0.0, 2.0).as_row()) == Conditions(1.5, 0.7, 0.0, 2.0)
    assert Conditions.from_row(None) is None and Conditions.from_row({"others": "x"}) is None


def test_every_timed_part_records_its_conditions_and_old_rows_still_read(cache, monkeypatch):
    import json

    from composer import latency

    p = Predictor(threads=1, repeats=1)
    p.predict(TINY)
    rows = [json.loads(line) for line in p.table.path.read_text().splitlines()]
    assert "created" in rows[0] and all({"load", "others", "seconds", "suspect"} <= set(r["cond"]) for r in rows[1:])
    # a row as written before conditions were recorded: read, not suspect; a re-timed row replaces the first
    key = rows[1]["key"]
    with open(p.table.path, "a") as handle:
        handle.write(json.dumps({"key": key, "ms": 99.0, "what": "ignored: the first timing wins"}) + "\n")
        handle.write(json.dumps({"check": "abc", "spec": "tiny", "error": 0.5, "agrees": False}) + "\n")
    again = LatencyTable(p.fingerprint, p.table.path.parent)
    assert again.get(key) == rows[1]["ms"] and again.checks["abc"]["error"] == 0.5
    again.add(key, 7.0, "re-timed", None, latency.Conditions(0.1, 2.0, 0.0), retimed=True)
    third = LatencyTable(p.fingerprint, p.table.path.parent)
    assert third.get(key) == 7.0 and third.suspect(key) and len(third) == len(rows) - 1
    assert sum(map(third.suspect, third.rows)) == 1 + sum(r["cond"]["suspect"] for r in rows[2:])


def test_the_self_check_retimes_suspect_parts_first_and_says_when_it_still_disagrees(cache, monkeypatch):
    from composer import latency

    p = Predictor(threads=1, repeats=1)
    first = p.predict(TINY)
    suspect_key = first.parts[0].key  # the stem alone as timed on a busy machine (this machine may be busier)
    p.table.conditions = {key: latency.Conditions(0.1, 0.0, 0.0) for key in p.table.rows}
    p.table.conditions[suspect_key] = latency.Conditions(4.0, 1.8, 0.0)
    asked: list[set] = []
    original = Predictor.predict

    def spy(self, source, measure_missing=True, retime=None):
        if retime:
            asked.append(set(retime))
        return original(self, source, measure_missing, retime)

    monkeypatch.setattr(Predictor, "predict", spy)
    monkeypatch.setattr(latency, "measure_sessions", lambda *a, **k: [first.ms / 50, first.ms / 49])
    monkeypatch.setattr(latency, "_cpu_ticks", lambda: None)  # a quiet machine, as far as the check can tell
    monkeypatch.setattr(latency, "_load_average", lambda: 0.1)
    check = p.self_check(TINY)
    assert asked[0] == {suspect_key} and asked[1] == {q.key for q in first.parts} - {suspect_key}
    assert check.retimed == len(p.table) and not check.agrees and check.suspect_before == 1
    assert "re-timed 9 parts and it still DISAGREES" in check.describe() and "\n" not in check.describe()
    assert p.table.checks[check.prediction.network]["agrees"] is False
    # a network whose last check disagreed is checked again; once one agrees, it is vouched for
    monkeypatch.setattr(latency, "measure_sessions", lambda *a, **k: [p.predict(TINY).ms] * 2)
    agreed = p.self_check(TINY)
    assert agreed.agrees and agreed.retimed == 0 and "agrees" in agreed.describe()
    assert p.self_check(TINY) is None and p.self_check(TINY, force=True) is not None
    assert Predictor(threads=1, repeats=1).self_check(TINY) is None  # read back from the table


def _latency_cli(cache, *args):
    env = {**os.environ, "COMPOSER_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "composer.cli", "latency", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_tables_lists_and_clear_removes_them(cache):
    assert _latency_cli(cache, "--tables").stdout.strip() == f"no latency tables in {cache / 'latency'}"
    keys = []
    for batch in (1, 2):
        p = Predictor(threads=1, repeats=1, batch_size=batch)
        p.predict(TINY)
        keys.append(p.table.path.stem)
    listed = _latency_cli(cache, "--tables")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:5] == ["fingerprint", "parts", "suspect", "age", "last"]
    assert [line.split()[0] for line in lines[2:]] == keys and all(" 9 " in line for line in lines[2:])
    assert "never" in lines[2] and "batch 2" in lines[3]
    removed = _latency_cli(cache, "--clear", keys[0][:6])
    assert removed.returncode == 0 and removed.stdout.startswith("removed 1 latency table from")
    assert [p.stem for p in (cache / "latency").glob("*.jsonl")] == [keys[1]]
    assert _latency_cli(cache, "--clear").stdout.startswith("removed 1 latency table from")
    assert not list((cache / "latency").glob("*"))


@pytest.mark.parametrize(("args", "message"), [
    (["--clear", "xyz"], "error: --clear: a fingerprint is up to 16 hexadecimal digits (composer latency --tables "
                         "lists them), got 'xyz'"),
    (["--clear", "0123abcd"], "error: --clear: no table in {folder} with fingerprint '0123abcd' (composer latency "
                              "--tables lists them)"),
    (["--tables", "tiny.yaml"], "error: --tables and --clear take no SPEC, --retime or --measure"),
    ([], "error: composer latency: give a SPEC (a file, a preset name or YAML text), or --tables or --clear"),
])
def test_bad_table_commands_exit_2_with_one_line(cache, args, message):
    (cache / "latency").mkdir(parents=True)
    out = _latency_cli(cache, *args)
    assert out.returncode == 2 and out.stderr.strip() == message.format(folder=cache / "latency")


@pytest.mark.parametrize("args", [["--tables"], ["--clear"]])
def test_an_unreadable_tables_folder_exits_2_with_one_line(cache, args):
    cache.mkdir()
    (cache / "latency").write_text("a file where the folder should be")
    out = _latency_cli(cache, *args)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: cannot read the latency tables folder {cache / 'latency'}: Not a directory"


def test_retime_times_every_part_of_the_spec_again(cache, tmp_path):
    (tmp_path / "tiny.yaml").write_text(composer.dump_spec(composer.load_spec(TINY)))
    first = _latency_cli(cache, str(tmp_path / "tiny.yaml"), "--threads", "1", "--no-check")
    again = _latency_cli(cache, str(tmp_path / "tiny.yaml"), "--threads", "1", "--no-check", "--retime")
    assert first.returncode == again.returncode == 0, again.stderr
    assert "(9 parts; 9 parts timed now in" in first.stdout and "(9 parts; 9 parts timed now in" in again.stdout
    table = next((cache / "latency").glob("*.jsonl")).read_text().splitlines()
    assert len(table) == 1 + 9 + 9 and sum('"retimed": true' in line for line in table) == 9
    reread = Predictor(threads=1, folder=cache / "latency").predict(TINY, measure_missing=False)
    predicted = next(line for line in again.stdout.splitlines() if "predicted" in line)
    assert f"{reread.ms:9.2f} ms" in predicted  # the re-timed figures are the ones read from now on


def test_measure_never_prints_a_prediction_as_sound_that_its_check_found_wrong(cache, tmp_path):
    (tmp_path / "tiny.yaml").write_text(composer.dump_spec(composer.load_spec(TINY)))
    out = _latency_cli(cache, str(tmp_path / "tiny.yaml"), "--threads", "1", "--measure")
    assert out.returncode == 0, out.stderr
    _assert_sound_or_flagged(out.stdout)


def _assert_sound_or_flagged(stdout: str) -> float:
    """The final prediction agrees with the measurement within the tolerance the check states, or the output says
    it does not (on the predicted line and in the self-check's one line); the final ratio."""
    lines = stdout.splitlines()
    check = [line for line in lines if line.startswith("self-check: ")]
    predicted = next(line for line in lines if line.strip().startswith("predicted "))
    ratio = float(next(line for line in lines if "measured (fastest of 7)" in line).split("(prediction ")[1]
                  .split("x")[0])
    assert len(check) == 1
    tolerance = float(check[0].split("+-")[1].split("%")[0]) / 100
    if "DISAGREES" in check[0]:
        assert "NOT SOUND" in predicted
    else:
        assert "NOT SOUND" not in predicted and abs(ratio - 1) <= tolerance + 0.01, stdout
    return ratio


MEMORY_LOAD = "import numpy as np\na = np.zeros(8 * 2**20)\nwhile True:\n    a += 1.0\n"  # 64 MB, memory-bound


@pytest.mark.slow
def test_a_table_timed_under_a_memory_bound_load_is_mended_by_its_self_check(cache, tmp_path):
    """Issue 33's acceptance: a table built while eight memory-bound processes ran (3.77x the measured, once the
    load was gone, in the issue) is suspect, and `--measure` afterwards either predicts within 25% (re-timing
    the parts as needed) or says the prediction is not sound; never the stale prediction as if sound. The
    machine is shared: what is asserted is what the self-check itself decides, not times."""
    import yaml

    spec = yaml.safe_load(composer.dump_spec(composer.load_spec("identityformer_s12")))
    spec["input_size"] = 64  # an eighth of the pixels: the table builds in about a minute under the load
    (tmp_path / "s12.yaml").write_text(yaml.safe_dump(spec))
    load = [subprocess.Popen([sys.executable, "-c", MEMORY_LOAD]) for _ in range(8)]
    try:  # in this process with one timed call per session (the CLI's 5 took 139 s under this load)
        built = Predictor(threads=1, repeats=1, folder=cache / "latency").predict(tmp_path / "s12.yaml")
    finally:
        for process in load:
            process.kill()
            process.wait()
    assert built.measured_now == len(built.suspect) == 9  # every part timed under the load is suspect
    stale = built.ms
    out = _latency_cli(cache, str(tmp_path / "s12.yaml"), "--threads", "1", "--measure")
    assert out.returncode == 0, out.stderr
    ratio = _assert_sound_or_flagged(out.stdout)
    check = next(line for line in out.stdout.splitlines() if line.startswith("self-check: "))
    if abs(ratio - 1) > 0.25:
        assert "DISAGREES" in check, out.stdout
    if f"the table predicted {stale:.2f} ms" in check:  # the stale table disagreed: its parts were re-timed
        assert "re-timed" in check, out.stdout
    elif "DISAGREES" in check:  # disagreed and nothing re-timed: only because the machine is busy now
        assert "not re-timed: the machine is busy now" in check and f"predicted {stale:.2f} ms" in check, out.stdout
    print(f"stale {stale:.2f} ms", out.stdout, sep="\n")  # the figures, with -s


def test_a_search_checks_its_table_once_and_says_when_its_budget_rests_on_suspect_parts(cache, monkeypatch, capsys):
    from composer import latency

    p = Predictor(threads=1, repeats=1)
    p.predict(TINY)
    p.table.conditions = {key: latency.Conditions(3.0, 1.7, 0.0) for key in p.table.rows}  # all timed busy
    measured = []

    def agreeing(*args, **kwargs):
        measured.append(args[0])
        return [p.predict(TINY).ms] * 2

    monkeypatch.setattr(latency, "measure_sessions", agreeing)
    first = p.checked_predict(TINY)
    err = capsys.readouterr().err.splitlines()
    assert len(measured) == 1 and len(first.suspect) == len(p.table) == 9
    assert err[0].startswith(f"latency table {p.table.path.name}: self-check: predicted ") and "agrees" in err[0]
    assert err[1].startswith("note: the latency budget rests on 9 parts timed while the machine was busy") and \
        len(err) == 2
    assert p.checked_predict(TINY).ms == first.ms and len(measured) == 1 and not capsys.readouterr().err


def test_a_latency_budget_checks_its_table_on_the_base_before_the_first_trial(cache, tmp_path, monkeypatch, capsys):
    from composer import latency
    from composer.search import study as study_module

    events = []
    original_check, original_objective = latency.Predictor.self_check, study_module.Searcher.objective

    def self_check(self, source, *args, **kwargs):
        events.append(f"check {getattr(source, 'name', source)}")
        return original_check(self, source, *args, **kwargs)

    def objective(self, trial):
        events.append("trial")
        return original_objective(self, trial)

    monkeypatch.setattr(latency.Predictor, "self_check", self_check)
    monkeypatch.setattr(study_module.Searcher, "objective", objective)
    monkeypatch.setattr(latency, "_PREDICTORS", {})
    # a whole-model measurement that agrees with the prediction (the search's own predictor: same fingerprint)
    monkeypatch.setattr(latency, "measure_sessions", lambda source, *a, **k: [
        latency.predictor("cpu", 1).predict(source, measure_missing=False).ms] * 2)
    assert _search(tmp_path, "--trials", "2", "--max-latency", "1000ms") == 0
    assert events[:2] == ["check tiny", "trial"] and events.count("check tiny") == 1, events
    err = capsys.readouterr().err
    assert err.count("self-check: predicted ") == 1, err   # the base's parts were new: measured and said once
    # a second worker (process) on the same table: the base's last check is on record, nothing is measured again
    events.clear()
    latency._PREDICTORS.clear()   # as in a new process
    assert _search(tmp_path, "--trials", "3", "--max-latency", "1000ms") == 0
    assert events[0] == "check tiny" and "self-check: predicted " not in capsys.readouterr().err
