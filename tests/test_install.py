"""composer as users install it: a wheel built from the repository's files, installed (not editable) into a
fresh virtual environment, run from an empty folder. Presets and search spaces must come from the wheel.

No network: the wheel is built without build isolation (setuptools comes with the test extra) and installed
with ``--no-deps --no-index``; the fresh environment reaches this environment's dependencies (torch, timm, ...)
through a ``.pth`` line, which adds their folder without running its ``.pth`` files, so the editable install of
this checkout is not visible there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted(p.stem for p in (ROOT / "specs").glob("*.yaml"))
SPACES = sorted(p.stem for p in (ROOT / "search").glob("*.yaml"))


BUILD_LEFTOVERS = {"build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", ".git", "runs", ".venv", "venv"}


def _repository_files() -> list[str]:
    """What a clean clone holds (tracked files, and new ones not ignored): build/, *.egg-info stay behind.
    Outside a git checkout (an unpacked sdist), every file but build leftovers."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout
        return [f for f in out.decode().split("\0") if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                and not BUILD_LEFTOVERS & set(p.relative_to(ROOT).parts)
                and not any(part.endswith(".egg-info") for part in p.parts)]


class Installed:
    def __init__(self, root: Path):
        self.root = root
        self.env = root / "env"
        self.bin = self.env / ("Scripts" if os.name == "nt" else "bin")
        self.python = self.bin / ("python.exe" if os.name == "nt" else "python")
        self.work = root / "empty"
        self.work.mkdir()

    def run(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "COMPOSER_SPECS_PATH",
                                                                     "COMPOSER_SEARCH_PATH", "VIRTUAL_ENV")}
        environ["PATH"] = f"{self.bin}{os.pathsep}{environ.get('PATH', '')}"
        environ.update(env or {})
        return subprocess.run(list(args), cwd=self.work, env=environ, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("install")
    clone = root / "clone"
    for name in _repository_files():
        target = clone / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    dist = root / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(clone)], check=True, capture_output=True, timeout=300)
    wheels = list(dist.glob("composer_vision-*.whl"))
    assert len(wheels) == 1, wheels
    inst = Installed(root)
    venv.create(inst.env, with_pip=True)
    site = subprocess.run([str(inst.python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site, "_composer_test_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    subprocess.run([str(inst.python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
                   check=True, capture_output=True, timeout=300)
    inst.wheel = wheels[0]
    return inst


def test_the_wheel_carries_every_preset_and_search_space(installed):
    import zipfile

    names = zipfile.ZipFile(installed.wheel).namelist()
    assert sorted(Path(n).stem for n in names if n.startswith("composer/_data/specs/")) == PRESETS
    assert sorted(Path(n).stem for n in names if n.startswith("composer/_data/search/")) == SPACES
    assert not [n for n in names if n.startswith(("tests/", "specs/", "search/"))]


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    out = installed.run(str(installed.python), "-c", "import composer; print(composer.__file__)")
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve().is_relative_to(installed.env.resolve())
    version = installed.run("composer", "--version")
    assert version.returncode == 0 and version.stdout.startswith("composer 0."), version


def test_every_preset_by_name_from_an_empty_folder(installed):
    out = installed.run("composer", "validate", *PRESETS)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\nok  ") + out.stdout.startswith("ok  ") == len(PRESETS)
    built = installed.run("composer", "build", "caformer_s18")
    assert built.returncode == 0, built.stderr
    assert "26,341,656 parameters (matches the plan)" in built.stdout
    listing = installed.run("composer", "list")
    assert listing.returncode == 0, listing.stderr
    assert all(f"  {name} " in listing.stdout for name in PRESETS + SPACES)
    assert str(Path("composer", "_data", "specs")) in listing.stdout


def test_python_api_and_timm_from_an_empty_folder(installed):
    code = (
        "import composer, timm\n"
        "from composer import compose, estimate, plan\n"
        "assert estimate('hpxformer_s18').params == sum(p.numel() for p in compose('hpxformer_s18').parameters())\n"
        "assert len(plan('caformer_s18').graph) > 20\n"
        # every preset, and composer_spec (any spec; what a composer train bundle's config.json names)
        f"assert len(timm.list_models('composer_*')) == {len(PRESETS) + 1}, timm.list_models('composer_*')\n"
        "m = timm.create_model('composer_caformer_s18', num_classes=10)\n"
        "print(sum(p.numel() for p in m.parameters()))\n")
    out = installed.run(str(installed.python), "-c", code)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 20_000_000


def test_specs_path_adds_folders_and_unknown_names_list_what_was_searched(installed, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "small_caformer.yaml").write_text("extends: caformer_s18\ndepths: [1, 1, 1, 1]\n")
    env = {"COMPOSER_SPECS_PATH": str(mine)}
    out = installed.run("composer", "validate", "small_caformer", env=env)
    assert out.returncode == 0, out.stderr
    missing = installed.run("composer", "build", "caformer_s19", env=env)
    assert missing.returncode == 2
    assert "did you mean 'caformer_s18'" in missing.stderr
    assert str(mine) in missing.stderr and str(Path("composer", "_data", "specs")) in missing.stderr
    assert "Traceback" not in missing.stderr
    path = installed.run("composer", "build", "specs/chpxformer.yaml")
    assert path.returncode == 2 and "composer build chpxformer" in path.stderr


def test_search_as_typed_and_by_space_name_from_an_empty_folder(installed):
    out = installed.run("composer", "search", "--budget", "5GFLOPs", "--trials", "2", "--no-progress")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "default space metaformer_s18" in out.stdout
    best = installed.work / "runs" / "metaformer_s18-proxy" / "best.yaml"
    assert best.is_file()
    assert installed.run("composer", "validate", str(best)).returncode == 0
    named = installed.run("composer", "search", "transnext_micro", "--trials", "1", "--no-progress",
                          "--run-dir", "named")
    assert named.returncode == 0, named.stdout + named.stderr
    assert (installed.work / "named" / "best.yaml").is_file()
    unknown = installed.run("composer", "search", "metaformer_s19")
    assert unknown.returncode == 2 and "did you mean 'metaformer_s18'" in unknown.stderr


PLUGIN = ROOT / "examples" / "composer-msaconv"


def test_a_plugin_installed_with_pip_works_everywhere_and_uninstalling_it_leaves_composer_working(installed, tmp_path):
    """The example plugin (examples/composer-msaconv: TiC's MSA-Conv) pip-installed next to the wheel: its mixer
    and preset reach every command, the conformance kit passes it, and composer works after it is gone."""
    pip = [str(installed.python), "-m", "pip"]
    source = tmp_path / "composer-msaconv"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    out = installed.run(*pip, "install", "-q", "--no-deps", "--no-index", "--no-build-isolation", str(source))
    assert out.returncode == 0, out.stderr
    try:
        listing = installed.run("composer", "list")
        assert listing.returncode == 0 and "PluginWarning" not in listing.stderr, listing.stderr
        assert "  MSA      -> msa_conv" in listing.stdout and "  msa_caformer_s18 " in listing.stdout
        assert "plugin 'msaconv'" in listing.stdout
        schema = installed.run("composer", "schema")
        assert '"mixer type msa_conv"' in schema.stdout
        (tmp_path / "typo.yaml").write_text("extends: msa_caformer_s18\nmixers:\n  MSA: {kernel_sise: 5}\n")
        typo = installed.run("composer", "validate", str(tmp_path / "typo.yaml"))
        assert typo.returncode == 2
        assert "typo.yaml:3: mixers.MSA.kernel_sise: unknown field 'kernel_sise'; did you mean 'kernel_size'?" \
            in typo.stderr
        built = installed.run("composer", "build", "msa_caformer_s18", "--count")
        assert built.returncode == 0, built.stderr
        assert "(matches the plan)" in built.stdout and "(+0.0000% vs plan)" in built.stdout
        graph = installed.run("composer", "graph", "msa_caformer_s18")
        assert graph.returncode == 0 and "msa_conv" in graph.stdout.lower()
        (tmp_path / "space.yaml").write_text("base: caformer_s18\nchoices:\n  layout: [[Conv], [Conv], [MSA, A], "
                                             "[MSA, A]]\n  mixers.MSA.kernel_size: [3, 5]\nbudget: {macs: 8G}\n")
        search = installed.run("composer", "search", str(tmp_path / "space.yaml"), "--trials", "2", "--no-progress",
                               "--run-dir", str(tmp_path / "run"))
        assert search.returncode == 0, search.stderr
        assert "MSA" in (tmp_path / "run" / "trials.csv").read_text()
        code = ("import timm, composer.catalogue as c\n"
                "m = timm.create_model('composer_msa_caformer_s18', num_classes=10)\n"
                "timm.create_model('composer_caformer_s18', layout='Conv-MSA-MSA-A', num_classes=10)\n"
                "assert '`msa_conv`' in c.render(), 'catalogue'\n"
                "print(sum(p.numel() for p in m.parameters()))\n")
        py = installed.run(str(installed.python), "-c", code)
        assert py.returncode == 0, py.stderr
        kit = installed.run("composer", "check-mixer", "MSA", "--quick")
        assert kit.returncode == 0, kit.stdout + kit.stderr
        assert "registered by plugin 'msaconv'" in kit.stdout and "passed:" in kit.stdout
    finally:
        gone = installed.run(*pip, "uninstall", "-y", "-q", "composer-msaconv")
    assert gone.returncode == 0, gone.stderr
    after = installed.run("composer", "list")
    assert after.returncode == 0 and "MSA" not in after.stdout and "msa_caformer_s18" not in after.stdout
    assert installed.run("composer", "build", "caformer_s18").returncode == 0
