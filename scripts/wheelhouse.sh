#!/usr/bin/env bash
# Builds the GPU validation kit's wheelhouse on a connected machine:
#   scripts/wheelhouse.sh DIR            download every wheel of scripts/wheelhouse.txt for
#                                        CPython 3.12 / manylinux x86_64 (--no-deps, not torch)
#                                        into DIR, then split it as below
#   scripts/wheelhouse.sh --split DIR    only split: each file over PART_BYTES (default 60 MiB)
#                                        becomes DIR/NAME.part00, .part01, ... and DIR/SHA256SUMS
#                                        lists every wheel (whole) and every part
# Send DIR in transfers of at most 60 MiB (SHA256SUMS with the first), then on the GPU machine
# run scripts/gpu_check.sh --receive PARTS_DIR STORE after each and scripts/gpu_check.sh
# --wheelhouse STORE at the end (docs/gpus.md, "GPU check kit").
set -euo pipefail
usage() { echo "usage: $0 [--split] DIR   (PART_BYTES=$PART_BYTES; see the header of $0)" >&2; exit 2; }
PART_BYTES=${PART_BYTES:-62914560}
[[ $PART_BYTES =~ ^[1-9][0-9]*$ ]] || { echo "PART_BYTES must be a positive whole number of bytes, got '$PART_BYTES'" >&2; exit 2; }
split_only=0
if [[ ${1:-} == --split ]]; then split_only=1; shift; fi
[[ $# -eq 1 && -n $1 && $1 != -* ]] || usage
dir=$1
here=$(cd "$(dirname "$0")" && pwd)

if (( ! split_only )); then
    mkdir -p "$dir"
    if compgen -G "$dir/*.part[0-9][0-9]" > /dev/null; then
        echo "$dir already holds split parts; use an empty folder" >&2; exit 2
    fi
    platforms=()
    for p in manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 \
             manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
             manylinux_2_5_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
    mapfile -t wheels < <(grep -v '^\s*#' "$here/wheelhouse.txt" | grep -v '^\s*$')
    "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" -d "$dir" "${wheels[@]}"
fi

[[ -d $dir ]] || { echo "no such folder: $dir" >&2; exit 2; }
cd "$dir"
shopt -s nullglob
files=(*.whl)
(( ${#files[@]} )) || { echo "no wheels in $dir" >&2; exit 2; }
sha256sum "${files[@]}" > SHA256SUMS.new
for f in "${files[@]}"; do
    if (( $(stat -c %s "$f") > PART_BYTES )); then
        split -b "$PART_BYTES" -d -a 2 "$f" "$f.part"
        sha256sum "$f".part[0-9][0-9] >> SHA256SUMS.new
        rm "$f"
        echo "split $f into $(ls "$f".part[0-9][0-9] | wc -l) parts"
    fi
done
mv SHA256SUMS.new SHA256SUMS
echo "$dir: ${#files[@]} wheels, $(du -sh . | cut -f1); checksums in $dir/SHA256SUMS"
