#!/usr/bin/env bash
# The wheels benchmarks/gpu_run.sh needs on the lent GPU machine, into .whl/ (in .gitignore, so the device call
# can carry it; about 8 MB):
#
#     bash benchmarks/gpu_wheels.sh        # here, with the project's venv active (PyPI reachable)
#
# That machine's python3 (3.12) has torch, torchvision, timm, numpy, pyyaml, networkx, packaging, markupsafe and
# pygments (/work/.library/device/KINDS.md) but not pydantic or optuna and theirs. The versions are this venv's,
# so the GPU runs the code against what CI tests. Nothing can be fetched there, hence wheels, without their
# dependencies (each one is named here).
set -euo pipefail
cd "$(dirname "$0")/.."
packages="pydantic pydantic_core annotated-types typing-inspection typing_extensions optuna alembic SQLAlchemy
          colorlog Mako"
rm -rf .whl && mkdir .whl
for name in $packages; do
    version=$(python -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$version" ] || { echo "$name is not installed in this venv" >&2; exit 1; }
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version" 2>&1 | grep -v "^WARNING: Location" || true
done
ls .whl
du -sh .whl
