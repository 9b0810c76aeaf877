#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras. Idempotent: a venv whose
# stamp matches pyproject.toml is reused.
#
#   scripts/setup.sh [--wheelhouse DIR]... [--no-index] [--dry-run]
#
# --wheelhouse DIR  also install from the wheels in DIR (pip --find-links; repeatable;
#                   PIP_FIND_LINKS works too)
# --no-index        never reach a package index: an air-gapped machine, every wheel in a
#                   wheelhouse (needs --wheelhouse or PIP_FIND_LINKS)
# --dry-run         print the pip commands and exit (touches nothing)
# Exit codes: 0 installed (or already); 2 bad arguments; else pip's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_opts=()
no_index=0
links=${PIP_FIND_LINKS:-}
dry_run=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheelhouse)
            dir=${2:-}
            if [ -z "$dir" ] || [ ! -d "$dir" ]; then
                echo "setup.sh: --wheelhouse needs an existing folder of wheels, got '${dir}'" >&2; exit 2
            fi
            pip_opts+=(--find-links "$(cd "$dir" && pwd)"); links=$dir; shift 2 ;;
        --no-index) no_index=1; pip_opts+=(--no-index); shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument '$1' (allowed: --wheelhouse DIR, --no-index, --dry-run)" >&2; exit 2 ;;
    esac
done
if [ "$no_index" = 1 ] && [ -z "$links" ]; then
    echo "setup.sh: --no-index needs wheels: give --wheelhouse DIR or set PIP_FIND_LINKS" >&2; exit 2
fi
run() {
    if [ "$dry_run" = 1 ]; then echo "$*"; else "$@"; fi
}
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ -f "$stamp" ] && [ "$dry_run" = 0 ]; then exit 0; fi
[ -x .venv/bin/python ] || run "$PY" -m venv .venv
# an offline machine keeps the venv's own pip
[ "$no_index" = 1 ] || run .venv/bin/python -m pip install -q ${pip_opts[@]+"${pip_opts[@]}"} --upgrade pip
# torch first, from a range: on this kind of machine pip takes the wheels on local disk;
# on a GPU machine, install your CUDA build of torch beforehand and this is a no-op.
run .venv/bin/python -m pip install -q ${pip_opts[@]+"${pip_opts[@]}"} "torch>=2.4,<3" "torchvision>=0.19,<1"
run .venv/bin/python -m pip install -q ${pip_opts[@]+"${pip_opts[@]}"} -e '.[test]'
[ "$dry_run" = 1 ] && exit 0
rm -f .venv/.installed-*
touch "$stamp"
