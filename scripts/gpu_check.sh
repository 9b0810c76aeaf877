#!/usr/bin/env bash
# The GPU validation kit, one command (docs/gpus.md, "GPU check kit"):
#   scripts/gpu_check.sh --receive PARTS_DIR STORE   move one transfer's wheel parts (and
#                                                     SHA256SUMS) into STORE, check the parts, exit
#   scripts/gpu_check.sh --verify STORE               join split wheels in STORE and verify them, exit
#   scripts/gpu_check.sh [--wheelhouse STORE] [--out DIR] [--dry-run] [-- ARGS for the driver]
#       joins + verifies STORE, installs its wheels with --no-index into a venv that reuses the
#       machine's torch (--system-site-packages), then runs benchmarks/gpu_check.py, which writes
#       DIR/gpu_check.json and DIR/gpu_check.md. The whole command keeps to BUDGET_S seconds
#       (default 480, the 8 minutes): the steps get what the install leaves.
#       --dry-run: every step on the CPU, tiny sizes, with $PYTHON (default: .venv/bin/python,
#       else python3; no wheelhouse needed, no time budget).
set -euo pipefail
started=$(date +%s)
repo=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "gpu_check.sh: $*" >&2; exit 2; }

# Checks every part in STORE whose name SHA256SUMS lists; a part with a wrong sum is an error.
check_parts() {
    local store=$1
    [[ -f $store/SHA256SUMS ]] || return 0
    (cd "$store" && grep -E '\.part[0-9]{2}$' SHA256SUMS | while read -r sum name; do
        [[ -f $name ]] || continue
        echo "$sum  $name" | sha256sum -c --quiet - > /dev/null 2>&1 || { echo "corrupt part: $store/$name" >&2; exit 1; }
    done)
}

# Joins NAME.part00.. into NAME once every listed part of it is there and intact, then checks
# every wheel SHA256SUMS lists: all must be there with the right sum. Names each problem.
join_and_verify() {
    local store=$1
    [[ -d $store ]] || die "wheelhouse $store is not a folder"
    [[ -f $store/SHA256SUMS ]] || die "no SHA256SUMS in $store (send it with the first transfer)"
    (cd "$store"
     bad=0
     while read -r sum name; do
         [[ $name == *.part[0-9][0-9] ]] || continue
         [[ ! -f ${name%.part[0-9][0-9]} ]] || continue  # joined by an earlier run (checked below)
         if [[ ! -f $name ]]; then
             echo "missing part: $store/$name (a transfer not received?)" >&2; bad=1
         elif ! echo "$sum  $name" | sha256sum -c --quiet - > /dev/null 2>&1; then
             echo "corrupt part: $store/$name (send it again)" >&2; bad=1
         fi
     done < SHA256SUMS
     (( ! bad )) || exit 1
     for first in *.part00; do
         [[ -e $first ]] || continue
         whole=${first%.part00}
         cat "$whole".part[0-9][0-9] > "$whole.joining" && mv "$whole.joining" "$whole"
     done
     while read -r sum name; do
         [[ $name == *.part[0-9][0-9] ]] && continue
         [[ -f $name ]] || { echo "missing wheel: $store/$name (a transfer not received?)" >&2; bad=1; continue; }
         echo "$sum  $name" | sha256sum -c --quiet - > /dev/null 2>&1 || { echo "checksum mismatch: $store/$name" >&2; bad=1; }
     done < SHA256SUMS
     (( ! bad )) || exit 1
     rm -f ./*.part[0-9][0-9])
    echo "wheelhouse $store: $(grep -vcE '\.part[0-9]{2}$' "$store/SHA256SUMS") wheels verified"
}

case ${1:-} in
    --receive)
        [[ $# -eq 3 ]] || die "usage: --receive PARTS_DIR STORE"
        parts=$2 store=$3
        [[ -d $parts ]] || die "PARTS_DIR $parts is not a folder"
        mkdir -p "$store"
        shopt -s nullglob
        moved=("$parts"/*.whl "$parts"/*.part[0-9][0-9])
        [[ ! -f $parts/SHA256SUMS ]] || moved+=("$parts/SHA256SUMS")
        (( ${#moved[@]} )) || die "no wheels, parts or SHA256SUMS in $parts"
        mv -f "${moved[@]}" "$store"/
        check_parts "$store" || exit 1
        echo "received ${#moved[@]} files into $store"
        exit 0;;
    --verify)
        [[ $# -eq 2 ]] || die "usage: --verify STORE"
        join_and_verify "$2"
        exit 0;;
esac

wheelhouse="" out="runs/gpu_check" dry=0 extra=()
while (( $# )); do
    case $1 in
        --wheelhouse) [[ $# -ge 2 ]] || die "--wheelhouse needs a folder"; wheelhouse=$2; shift 2;;
        --out) [[ $# -ge 2 ]] || die "--out needs a folder"; out=$2; shift 2;;
        --dry-run) dry=1; shift;;
        --) shift; extra=("$@"); break;;
        *) die "unknown argument '$1'; allowed: --receive PARTS_DIR STORE | --verify STORE | [--wheelhouse STORE] [--out DIR] [--dry-run] [-- driver args]";;
    esac
done

budget=${BUDGET_S:-480}
[[ $budget =~ ^[0-9]+$ ]] || die "BUDGET_S must be a whole number of seconds, got '$budget'"
cd "$repo"
if (( dry )); then
    python=${PYTHON:-$repo/.venv/bin/python}
    [[ -n ${PYTHON:-} || -x $python ]] || python=python3
    [[ -z $wheelhouse ]] || join_and_verify "$wheelhouse"
    extra=(--dry-run "${extra[@]}")
else
    [[ -n $wheelhouse ]] || die "--wheelhouse STORE is needed on the GPU machine (or --dry-run)"
    join_and_verify "$wheelhouse"
    venv=${VENV:-/tmp/crossroads-gpu-venv}
    if [[ ! -x $venv/bin/python ]]; then  # without ensurepip: a venv without pip, filled by the system pip
        python3 -m venv --system-site-packages "$venv" 2> /dev/null \
            || python3 -m venv --system-site-packages --without-pip "$venv"
    fi
    pip=("$venv/bin/python" -m pip)
    "${pip[@]}" --version > /dev/null 2>&1 || pip=(python3 -m pip --python "$venv/bin/python")
    "${pip[@]}" install -q --no-index --no-deps --no-compile "$wheelhouse"/*.whl
    python=$venv/bin/python
    left=$(( budget - ($(date +%s) - started) ))
    echo "wheels installed after $(( $(date +%s) - started )) s; $(( left > 0 ? left : 0 )) s left for the steps"
    extra=(--budget "$(( left > 0 ? left : 0 ))" "${extra[@]}")
fi
PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 \
    "$python" -m benchmarks.gpu_check --out "$out" "${extra[@]}"
