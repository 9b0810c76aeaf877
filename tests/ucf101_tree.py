"""A tree laid out exactly as the official UCF101 archive unpacks, at no cost: the official
split lists copied from ../shared/data and, for each of their 13,320 entries, a link to a real clip."""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def official_tree(shared: Path, where: Path) -> Path:
    """`where/data/UCF-101/<Class>/v_*.avi` (links) + `where/data/ucfTrainTestlist/` (a copy)."""
    data = where / "data"
    shutil.copytree(shared / "ucfTrainTestlist", data / "ucfTrainTestlist")
    clip = (shared / "real_videos" / "v_ApplyEyeMakeup_sample.avi").resolve()
    for lst in sorted((data / "ucfTrainTestlist").glob("*list0*.txt")):
        for line in lst.read_text().splitlines():
            if line.strip():
                video = data / "UCF-101" / line.split()[0]
                if not video.exists():
                    video.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(clip, video)
    return data
