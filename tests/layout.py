"""Where test inputs live: the checkout, the shared real data (read-only: copy before
modifying), and the sizes of the synthetic mini-UCF101 the session fixtures build."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a worktree elsewhere (not beside ../shared) names it: CROSSROADS_SHARED_DATA=/path/to/shared/data
SHARED_DATA = Path(os.environ.get("CROSSROADS_SHARED_DATA") or REPO.parent / "shared" / "data")
SYNTHETIC_TEST_SET = dict(classes=8, groups=3, clips=2, frames=24, width=128, height=96, seed=0)
