#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras. Idempotent: a venv whose
# stamp matches pyproject.toml is reused.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ -f "$stamp" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first, from a range: on this kind of machine pip takes the wheels on local disk;
# on a GPU machine, install your CUDA build of torch beforehand and this is a no-op.
.venv/bin/python -m pip install -q "torch>=2.4,<3" "torchvision>=0.19,<1"
.venv/bin/python -m pip install -q -e '.[test]'
rm -f .venv/.installed-*
touch "$stamp"
