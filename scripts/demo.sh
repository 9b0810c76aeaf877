#!/usr/bin/env bash
# The main job on the built-in demo data, end to end on an embedded local Ray:
# synthetic mini-UCF101 -> shards -> train both streams (2 runs) -> fuse -> prune ->
# saliency + IROF -> statistics, figures and report under runs/demo/report/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pipeline.sweep --config ray_configs/demo.yaml "$@"
.venv/bin/python -m shards.inspect runs/demo/shards/split1 --sample 64 > /dev/null
echo "report: runs/demo/report/index.html   contact sheet: runs/demo/shards/split1/contact_sheet.png"
