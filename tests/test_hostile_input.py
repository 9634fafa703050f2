"""Hostile input ends cleanly: exit 2 and one located message, no traceback, no hang, nothing lost.

One case (at least) per class of issue 13: numbers, files and text, outputs, storages, semantics that used to
pass validation and fail later. Every case runs the command line in-process and checks the exit code, the
file:line or flag, and that the message says what was given and what is allowed.
"""

import os

import pytest

import composer

from conftest import TINY_SPACE


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPACE)
    return path


def _fails(run_cli, *args, expect: list[str]):
    code, out, err = run_cli(*args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "internal error" not in err, err
    for text in expect:
        assert text in err, (text, err)
    return err


# -- numbers ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("body, expect", [
    ("widths: [" + "9" * 5000 + "]\n", ["spec.yaml:2: widths[0]: cannot read the number", "5000 characters"]),
    ("depths: [yes, on, 1, 1]\n", ["spec.yaml:2: depths[0]", "the boolean True", "YAML reads yes / no"]),
    ("num_classes: no\n", ["spec.yaml:2: num_classes", "the boolean False"]),
    ("mixers: {Conv: {expansion_ratio: 0.01}}\n", ["spec.yaml:2: mixers.Conv.expansion_ratio",
                                                   "leaves int(64·0.01) = 0 hidden channels"]),
    ("channel_mixer: {type: mlp, ratio: 0.01}\n", ["spec.yaml:2: channel_mixer.ratio", "leaves 0 hidden channels"]),
    ("head: {ratio: 0.0001}\n", ["spec.yaml:2: head.ratio", "leaves no hidden channels"]),
    ("num_classes: 2e9\n", ["spec.yaml:2: num_classes", "valid integer"]),
])
def test_numbers_that_cannot_mean_anything(run_cli, tmp_path, body, expect):
    path = tmp_path / "spec.yaml"
    path.write_text("extends: caformer_s18\n" + body)
    for command in ("validate", "build"):
        _fails(run_cli, command, path, expect=[str(path) + ":" + e.split(":", 1)[1] if e.startswith("spec.yaml")
                                               else e for e in expect])


@pytest.mark.parametrize("flags, expect", [
    (["--budget", "0"], ["--budget: a MAC budget must be at least 1, got '0'"]),
    (["--budget", "0.4"], ["--budget: a MAC budget must be at least 1"]),
    (["--budget", "1e-9"], ["--budget: a MAC budget must be at least 1"]),
    (["--budget", "1e999999999"], ["--budget: cannot read '1e999999999' as a count: it is out of range"]),
    (["--budget", "nan"], ["--budget: cannot read 'nan' as a count"]),
    (["--max-params", "0"], ["--max-params: a parameter budget must be at least 1", "leave it out for none"]),
    (["--heartbeat", "nan"], ["--heartbeat must be a number of seconds between 0.1 and 86400, got nan"]),
    (["--heartbeat", "inf"], ["--heartbeat must be"]),
    (["--proxy-batch", "0"], ["--proxy-batch must be at least 1, got 0"]),
    (["--proxy-batch", "-3"], ["--proxy-batch must be at least 1, got -3"]),
    (["--trials", "0"], ["--trials must be at least 1"]),
])
def test_search_flags_out_of_range(run_cli, tmp_path, tiny, flags, expect):
    _fails(run_cli, "search", tiny, "--run-dir", tmp_path / "run", "--no-progress", *flags, expect=expect)
    assert not (tmp_path / "run" / "trials.csv").exists()   # refused before any trial


@pytest.mark.parametrize("budget, expect", [
    ("{macs: .nan}", "budget.macs: a count must be a finite number"),
    ("{macs: .inf}", "budget.macs: a count must be a finite number"),
    ("{macs: 5M, params: 0}", "budget.params: a parameter budget must be at least 1"),
])
def test_space_budgets_that_cannot_mean_anything(run_cli, tmp_path, budget, expect):
    path = tmp_path / "space.yaml"
    assert "budget: {macs: 10M}" in TINY_SPACE
    path.write_text(TINY_SPACE.replace("budget: {macs: 10M}", f"budget: {budget}"))
    _fails(run_cli, "search", path, "--run-dir", tmp_path / "run", expect=["space.yaml:", expect])


def test_log_range_from_zero(run_cli, tmp_path):
    path = tmp_path / "space.yaml"
    text = TINY_SPACE.replace("choices:\n", "choices:\n  drop_path_rate: {low: 0, high: 0.3, log: true}\n", 1)
    path.write_text(text)
    _fails(run_cli, "search", path, "--budget", "5M", "--run-dir", tmp_path / "run",
           expect=["choices.drop_path_rate: a log range needs low > 0"])


# -- files and text --------------------------------------------------------------------------------------------

def test_a_fifo_and_a_device_are_refused_without_reading(run_cli, tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    _fails(run_cli, "validate", fifo, expect=["not a regular file"])   # returns at once: nothing is read
    _fails(run_cli, "validate", "/dev/zero", expect=["/dev/zero: cannot read spec file", "not a regular file"])
    _fails(run_cli, "search", fifo, expect=["not a regular file"])


def test_huge_files_and_long_names(run_cli, tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("name: " + "x" * 2_000_000 + "\n")
    err = _fails(run_cli, "validate", big, expect=["bytes; a spec is a few KB"])
    assert len(err) < 500
    long_path = str(tmp_path / ("a" * 5000 + ".yaml"))
    err = _fails(run_cli, "validate", long_path, expect=["(5,"])
    assert len(err) < 500   # the 5000-character name is not echoed in full


def test_not_utf8_and_unreadable_search_spaces(run_cli, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    _fails(run_cli, "search", path, expect=["space.yaml:1: the file is not UTF-8 text: byte 0xe9 at line 1"])
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    _fails(run_cli, "search", folder, expect=["it is a folder"])


def test_a_file_name_with_a_colon_is_a_file(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v:1.yaml").write_text("extends: caformer_s18\ndepths: [1, 1, 1, 1]\n")
    code, out, _ = run_cli("validate", "v:1.yaml")
    assert code == 0 and "ok  v:1.yaml" in out


def test_yaml_merge_keys_work_and_unknown_tags_do_not(run_cli, tmp_path):
    merged = tmp_path / "merged.yaml"
    merged.write_text("extends: caformer_s18\nmixers:\n  Conv: &conv {kernel_size: 5}\n  C3:\n    <<: *conv\n"
                      "    type: sep_conv\n    kernel_size: 3\nlayout: C3-Conv-A-A\n")
    code, out, err = run_cli("validate", merged)
    assert code == 0, err
    tagged = tmp_path / "tagged.yaml"
    tagged.write_text("extends: caformer_s18\nhead: !custom {ratio: 2}\n")
    _fails(run_cli, "validate", tagged, expect=["tagged.yaml:2: head: unknown YAML tag '!custom' on a mapping"])
    python = tmp_path / "python.yaml"
    python.write_text("!!python/object:os.system\nwidths: [1]\n")
    _fails(run_cli, "validate", python, expect=["python.yaml:1: unknown YAML tag"])


def test_a_long_extends_chain_is_named_from_its_start(run_cli, tmp_path):
    for i in range(200):
        (tmp_path / f"c{i}.yaml").write_text(f"extends: c{i + 1}.yaml\n" if i < 199 else "extends: caformer_s18\n")
    _fails(run_cli, "validate", tmp_path / "c0.yaml", expect=["extends chain from c0.yaml is longer than 64 files"])


def test_ensemble_members_through_extends_are_found_next_to_the_ensemble(run_cli, tmp_path, monkeypatch):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "small.yaml").write_text("extends: caformer_s18\ndepths: [1, 1, 1, 1]\n")
    (tmp_path / "b" / "ens.yaml").write_text("ensemble: [small.yaml, convformer_s18]\n")
    (tmp_path / "a" / "child.yaml").write_text("extends: ../b/ens.yaml\nnum_classes: 10\n")
    monkeypatch.chdir(tmp_path / "a")
    code, out, err = run_cli("validate", "child.yaml")
    assert code == 0, err
    assert "ensemble of small + convformer_s18" in out


# -- outputs ---------------------------------------------------------------------------------------------------

def test_outputs_that_cannot_be_written(run_cli, tmp_path, tiny):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    _fails(run_cli, "search", tiny, "--run-dir", a_file, expect=[f"--run-dir {a_file}: it is a file, not a folder"])
    _fails(run_cli, "search", tiny, "--run-dir", "/proc/composer-run", expect=["--run-dir /proc/composer-run: cannot "
                                                                                "write there"])
    _fails(run_cli, "schema", "-o", "/proc/schema.json", expect=["--output /proc/schema.json: cannot write there"])
    _fails(run_cli, "graph", "caformer_s18", "-o", "/proc/g.dot", expect=["--output /proc/g.dot: cannot write there"])
    assert a_file.read_text() == "x"


# -- storages --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage, expect", [
    ("foo", "--storage foo: not a storage URL; use sqlite:///"),
    ("sqlite:////nonexistent/dir/study.db", "folder /nonexistent/dir does not exist"),
    ("journal:/nonexistent/study.log", "folder /nonexistent does not exist"),
    ("postgresql://user:secret@127.0.0.1:1/db", "cannot open the study storage"),
])
def test_storages_that_cannot_be_opened(run_cli, tmp_path, tiny, storage, expect):
    err = _fails(run_cli, "search", tiny, "--storage", storage, "--run-dir", tmp_path / "run", "--no-progress",
                 expect=[expect])
    assert "secret" not in err


@pytest.mark.parametrize("damage", ["empty", "truncated", "overwritten"])
def test_a_damaged_study_is_left_as_it_is_and_its_results_kept(run_cli, tmp_path, tiny, damage):
    run = tmp_path / "run"
    code, _, err = run_cli("search", tiny, "--run-dir", run, "--trials", "2", "--budget", "3M", "--no-progress")
    assert code == 0, err
    db, csv = run / "study.db", run / "trials.csv"
    rows = csv.read_text()
    if damage == "empty":
        db.write_bytes(b"")
    elif damage == "truncated":
        with open(db, "r+b") as handle:
            handle.truncate(db.stat().st_size // 2)
    else:
        db.write_bytes(os.urandom(4096))
    before = db.read_bytes()
    _fails(run_cli, "search", tiny, "--run-dir", run, "--trials", "3", "--budget", "3M", "--no-progress",
           expect=[str(db), "left as it is"])
    assert db.read_bytes() == before and csv.read_text() == rows


def test_an_earlier_runs_results_are_never_overwritten_by_a_smaller_study(run_cli, tmp_path, tiny):
    run = tmp_path / "run"
    assert run_cli("search", tiny, "--run-dir", run, "--trials", "3", "--budget", "3M", "--no-progress")[0] == 0
    earlier = (run / "trials.csv").read_text()
    new_db = tmp_path / "other.db"   # another storage: a new, empty study writing into the same run folder
    code, _, err = run_cli("search", tiny, "--run-dir", run, "--trials", "1", "--budget", "3M", "--no-progress",
                           "--storage", f"sqlite:///{new_db}")
    assert code == 0, err
    kept = [p for p in run.glob("trials.*.csv")]
    assert len(kept) == 1 and kept[0].read_text() == earlier


# -- semantics that used to pass validation and fail later -----------------------------------------------------

def test_an_ensemble_base_in_a_search_space(run_cli, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("base: ensemble_hpx_conv_s18\nchoices: {depths: [1, 2]}\nbudget: {macs: 5G}\n")
    _fails(run_cli, "search", path, expect=["space.yaml:1: base: the base 'ensemble_hpx_conv_s18' is an ensemble"])


def test_a_read_only_run_dir_is_refused(run_cli, tmp_path, tiny):
    """As a user: a folder without write permission (root writes anywhere, hence /proc in the test above)."""
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only folder")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        _fails(run_cli, "search", tiny, "--run-dir", folder / "run", expect=[f"--run-dir {folder / 'run'}: cannot"])
        _fails(run_cli, "search", tiny, "--run-dir", folder, expect=[f"--run-dir {folder}: cannot write there"])
    finally:
        folder.chmod(0o700)


def test_a_headless_ensemble_of_different_widths_gives_their_features_side_by_side(run_cli, tmp_path):
    """Once refused (the mean of pooled features of two widths failed in the forward): a headless ensemble now
    gives the members' pooled features side by side, whatever their widths."""
    path = tmp_path / "ens.yaml"
    path.write_text("ensemble: [caformer_s18, u_dwconv_micro]\nnum_classes: 0\ninput_size: 64\n")
    code, out, err = run_cli("validate", str(path))
    assert code == 0, err
    import torch

    import composer

    model = composer.compose(str(path)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.members[0].head_hidden_size
                                                         + model.members[1].head_hidden_size)


@pytest.mark.parametrize("body, field", [
    ("extends: caformer_s18\nwidths: [1000000, 128, 320, 512]\n", "widths"),
    ("extends: transnext_micro\ninput_size: 8192\n", "input_size"),
    # SDPA holds no N x N weights, but with attention dropout its math path does: 100 GB at 2048 px
    ("extends: caformer_s18\ninput_size: 2048\nmixers: {A: {attn_drop: 0.1}}\n", "input_size"),
])
def test_models_whose_memory_cannot_exist_are_refused_before_allocating(run_cli, tmp_path, body, field):
    path = tmp_path / "huge.yaml"
    path.write_text(body)
    _fails(run_cli, "build", path, expect=[f"huge.yaml:2: {field}: huge needs at least", "available",
                                           "--ignore-memory"])
    code, out, err = run_cli("validate", path)   # valid, with a warning that it cannot be built here
    assert code == 0 and "warning:" in err and "composer build refuses it here" in err


def test_a_huge_name_is_refused_and_not_echoed(run_cli, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("extends: caformer_s18\nname: " + "x" * 500_000 + "\n")
    err = _fails(run_cli, "validate", path, expect=["spec.yaml:2: name: string should have at most 200 characters"])
    assert len(err) < 400


@pytest.mark.parametrize("value, message", [
    ("yes", "input should be a valid integer (YAML reads yes / no / on / off / true / false as booleans; write the "
            "number), got True"),
    ('"7"', "input should be a valid integer, got '7'"),
    ("[3, on, 7, 9]", "stage 1: input should be a valid integer (YAML reads yes"),
])
def test_mixer_overrides_are_as_strict_as_the_spec(tmp_path, value, message):
    path = tmp_path / "lax.yaml"
    path.write_text(f"extends: caformer_s18\nmixers:\n  Conv: {{kernel_size: {value}}}\n")
    with pytest.raises(composer.SpecError) as err:
        composer.load_spec(path)
    assert f"lax.yaml:3: mixers.Conv.kernel_size: {message}" in str(err.value)


def test_a_reader_that_goes_away_is_no_internal_error():
    """composer list | head: the pipe closes before composer has written; it stops quietly (exit 141, SIGPIPE's)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "composer.cli", "list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()   # before anything was read: every write fails
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 141, err
    assert "internal error" not in err and "Traceback" not in err
