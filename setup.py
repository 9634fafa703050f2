"""Ships the presets (specs/*.yaml) and search spaces (search/*.yaml) inside the package of a built wheel.

They stay at the repository root, where ``composer build specs/chpxformer.yaml`` finds them in a clone (and where
an editable install reads them); building a wheel copies them to ``composer/_data/{specs,search}``, where
``composer.spec.source.shipped_folder`` finds them after ``pip install <path or wheel>``. Everything else is
in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("specs", "search")


class BuildPyWithPresets(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the repository's folders directly
        for kind in SHIPPED:
            target = Path(self.build_lib) / "composer" / "_data" / kind
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted((ROOT / kind).glob("*.yaml")):
                self.copy_file(str(source), str(target / source.name))

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            for kind in SHIPPED:
                outputs += [str(Path(self.build_lib) / "composer" / "_data" / kind / p.name)
                            for p in sorted((ROOT / kind).glob("*.yaml"))]
        return outputs


setup(cmdclass={"build_py": BuildPyWithPresets})
