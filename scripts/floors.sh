#!/usr/bin/env bash
# Checks the version floors: installs the LOWEST versions pyproject.toml allows of the
# Python-level dependencies (polars, pyarrow, ray, matplotlib, statsmodels, numpy) into a scratch
# venv and runs the fast tests there. Not run by CI (it downloads and installs a lot).
#
#   scripts/floors.sh [--venv DIR] [--reuse] [--print] [-- PYTEST_ARGS...]
#
# --venv DIR   the scratch venv (default /tmp/crossroads-floors; recreated every time)
# --reuse      keep DIR if it was made by this script for the same requirements
# --print      print the pinned requirements and exit
# PYTEST_ARGS  default: -q -m "not slow and not cuda"
# The venv has no --system-site-packages (that would mask the floors); torch and
# torchvision are installed from the same wheels as `scripts/setup.sh` picks, at the
# version of $PYTHON's torch when it has one. Exit code: pytest's (0 = the floors hold).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=/tmp/crossroads-floors
PY=${PYTHON:-python3}
print_only=0
reuse=0
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) VENV=${2:?--venv needs a folder}; shift 2 ;;
        --print) print_only=1; shift ;;
        --reuse) reuse=1; shift ;;
        --) shift; break ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "floors.sh: unknown argument '$1' (allowed: --venv DIR, --reuse, --print, -- PYTEST_ARGS)" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || set -- -q -m "not slow and not cuda"

# every core and test requirement, with the floored ones pinned to their lower bound
reqs=$("$PY" - <<'EOF'
import re, tomllib
FLOORED = {"polars", "pyarrow", "ray", "matplotlib", "statsmodels", "numpy"}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
wanted = project["dependencies"] + extras["explain"] + [r for r in extras["test"] if not r.startswith("crossroads")]
for req in wanted:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0)
    if name.lower() in FLOORED:
        floor = re.search(r">=\s*([0-9][^,;\s]*)", req)
        if not floor:
            raise SystemExit(f"pyproject.toml: {req!r} has no '>=' floor")
        extra = re.match(r"[A-Za-z0-9_.-]+(\[[^]]*\])?", req).group(1) or ""
        req = f"{name}{extra}=={floor.group(1)}"
    if not name.startswith("torch"):
        print(req)
EOF
)
if [ "$print_only" = 1 ]; then echo "$reqs"; exit 0; fi

torch_pin=$("$PY" -c 'import torch, torchvision; v = lambda m: m.__version__.split("+")[0]; print(f"torch=={v(torch)} torchvision=={v(torchvision)}")' 2>/dev/null \
            || echo 'torch>=2.4,<3 torchvision>=0.19,<1')
stamp="$VENV/.floors-requirements"
if [ "$reuse" = 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$torch_pin $reqs" ]; then
    echo "floors.sh: reusing $VENV"
else
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $torch_pin
    mapfile -t req_lines <<<"$reqs"
    "$VENV/bin/python" -m pip install -q "${req_lines[@]}"
    echo "$torch_pin $reqs" > "$stamp"
fi
echo "floors installed:"
"$VENV/bin/python" -m pip list 2>/dev/null | grep -i -E '^(polars|pyarrow|ray|matplotlib|statsmodels|numpy|torch) '
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
