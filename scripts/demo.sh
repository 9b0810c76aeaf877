#!/usr/bin/env bash
# The main job on the built-in demo data: synthetic mini-UCF101 -> shards -> inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
EXP=${EXP:-runs/demo}
PY=.venv/bin/python
$PY -m ingest.synthetic --out "$EXP/videos"
$PY -m ingest.build_shards --videos "$EXP/videos" --splits "$EXP/videos/ucfTrainTestlist" --split 1 --out "$EXP/shards/split1" --short-side 80
$PY -m shards.inspect "$EXP/shards/split1"
