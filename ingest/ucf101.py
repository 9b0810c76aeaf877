"""The official UCF101 split lists, parsed as they are.

``classInd.txt``: ``<1-based index> <Class>``; ``trainlist0N.txt``: ``Class/v_Class_gGG_cCC.avi
<1-based label>``; ``testlist0N.txt``: the path only. Lines end in CRLF. The class is the
folder part of the path (the ``HandstandPushups`` folder holds ``v_HandStandPushups_*`` files,
so the file name is never used for the class).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

SUBSETS = ("train", "test")
NAME_RE = re.compile(r"^v_(?P<cls>.+)_g(?P<group>\d+)_c(?P<clip>\d+)$")


class SplitListError(ValueError):
    """A malformed, inconsistent or unresolvable split-list line (the message names it)."""


@dataclass(frozen=True)
class VideoEntry:
    path: str  # relative to the videos folder, as in the list
    class_name: str
    label: int  # 0-based, in the (possibly subset) class list
    group: int
    clip: int

    @property
    def video_id(self) -> str:
        return Path(self.path).stem


def list_path(splits_dir: Path, subset: str, split: int) -> Path:
    if subset not in SUBSETS or split not in (1, 2, 3):
        raise ValueError(f"subset must be one of {SUBSETS} and split 1-3, got {subset!r}, {split!r}")
    return Path(splits_dir) / f"{subset}list0{split}.txt"


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split list not found")
    text = path.read_bytes().decode("utf-8")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _listed_paths(splits_dir: Path, split: int, subset: str) -> dict[str, int]:
    """Path -> line number of one list (no checks; for cross-list checks)."""
    return {line.split()[0]: n for n, line in _lines(list_path(splits_dir, subset, split))}


def read_classes(splits_dir: Path) -> list[str]:
    """Class names in label order (``classInd.txt`` index 1 is label 0)."""
    path = Path(splits_dir) / "classInd.txt"
    names = []
    for n, line in _lines(path):
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) != len(names) + 1:
            raise SplitListError(f"{path}:{n}: expected '<{len(names) + 1}> <Class>', got {line!r}")
        names.append(fields[1])
    return names


def read_split(splits_dir: Path, split: int, subset: str, *, videos: Path | None = None,
               classes: list[str] | None = None, allow_missing: bool = False) -> list[VideoEntry]:
    """Entries of one list, in list order.

    ``classes`` keeps only those classes and relabels them 0..k-1 in ``classInd`` order.
    With ``videos``, an entry whose file is missing is an error naming the line; so is a class
    not in ``classInd.txt`` or a train label that disagrees with it. ``allow_missing`` turns
    both into warnings: unknown classes are dropped, missing videos are kept (the ingest then
    records them as failed).
    """
    all_classes = read_classes(splits_dir)
    kept = all_classes if classes is None else [c for c in all_classes if c in set(classes)]
    if classes is not None and len(kept) != len(set(classes)):
        raise SplitListError(f"unknown classes {sorted(set(classes) - set(all_classes))} "
                             f"(not in {Path(splits_dir) / 'classInd.txt'})")
    labels = {name: i for i, name in enumerate(kept)}
    path = list_path(splits_dir, subset, split)
    entries, seen = [], {}
    # a video in both lists would leak test data into training
    other = _listed_paths(splits_dir, split, "train") if subset == "test" else {}
    for n, line in _lines(path):
        where = f"{path}:{n}"
        fields = line.split()
        if len(fields) != (2 if subset == "train" else 1) or "/" not in fields[0] \
                or (subset == "train" and not fields[1].isdigit()):
            raise SplitListError(f"{where}: malformed line {line!r}")
        rel = fields[0]
        if rel.startswith(("/", "\\")) or ".." in Path(rel).parts or ":" in rel:
            raise SplitListError(f"{where}: {rel!r} is outside the videos folder "
                                 f"(entries are Class/v_*.avi relative paths)")
        if rel in seen:
            raise SplitListError(f"{where}: {rel!r} is listed twice (first at line {seen[rel]})")
        seen[rel] = n
        if rel in other:
            raise SplitListError(f"{where}: {rel!r} is also in the train list "
                                 f"({list_path(splits_dir, 'train', split)}:{other[rel]})")
        class_name, _, filename = rel.partition("/")
        match = NAME_RE.match(Path(filename).stem)
        if match is None:
            raise SplitListError(f"{where}: {filename!r} is not named v_<Class>_gGG_cCC")
        problem = None
        if class_name not in all_classes:
            problem = f"{where}: class {class_name!r} is not in classInd.txt"
        elif subset == "train" and int(fields[1]) != all_classes.index(class_name) + 1:
            raise SplitListError(f"{where}: label {fields[1]} but classInd.txt gives {class_name} "
                                 f"label {all_classes.index(class_name) + 1}")
        elif videos is not None and class_name in labels and not (Path(videos) / rel).is_file():
            problem = f"{where}: video {Path(videos) / rel} not found"
        if problem:
            if not allow_missing:
                raise SplitListError(problem + " (use allow_missing / --allow-missing to go on)")
            warnings.warn(problem, stacklevel=2)
            if class_name not in all_classes:
                continue
        if class_name not in labels:
            continue
        entries.append(VideoEntry(rel, class_name, labels[class_name],
                                  int(match["group"]), int(match["clip"])))
    return entries
