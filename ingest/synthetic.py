"""Synthetic mini-UCF101: real MPEG-4 part 2 (XviD) AVI files plus official-format split lists.

Classes are ``<Appearance><Motion>`` (e.g. ``RedLeft``, ``BlueUpRight``) in one of two designs:

- ``factorial``: every appearance with every motion (``classes = appearances x motions``);
- ``ring``: ``classes = 2 x appearances``; appearance ``i`` moves in direction ``i`` or
  ``i + 1`` (mod the number of appearances), so each appearance and each motion belongs to
  exactly two classes (e.g. RedLeft, RedRight, BlueRight, BlueUp, GreenUp, GreenDown,
  PurpleDown, PurpleLeft).

Every video shows one textured square (a quarter of the frame width; the same texture in
every video) moving at 4-6 px/frame over a textured background that drifts slowly (at most
0.5 px/frame; speeds are for 320 px wide frames and scale with the width). The square's
position wraps around the frame edges (a torus) and starts at a uniformly random place, so its
position in any single frame is uniform and says nothing about its direction. All appearances share the
same luminance (same luma, same texture pattern); they differ only in hue. Hence:

- a spatial-only model (one RGB frame) sees the appearance but not the motion: accuracy is
  capped at one over the classes per appearance (25 % for the factorial 2 x 4 design, 50 %
  for any ring);
- a flow-only model (computed on grayscale) sees the motion but not the appearance: accuracy
  is capped at one over the classes per motion (50 % for the factorial 2 x 4, 50 % for a ring);
- two-stream fusion can reach ~100 %.

With ``class_list`` (``ucf101``: the official ``classInd.txt``, 101 names, shipped as
``ingest/ucf101_classInd.txt``; or the path of any file in that format) the classes take its
names in its order (the first ``classes`` of them): class ``k`` gets hue ``k // 8`` of a colour
wheel of ``ceil(classes / 8)`` equal-luma hues and direction ``k % 8`` of the 8 motions, so
one frame narrows a video to 8 classes and the flow to ``ceil(classes / 8)``. That gives the
paper's class count and names at any frame size (``ray_configs/paper_shape.yaml``). In a wheel
set the hue colours the square and tints the whole scene (the background, at the same luma;
SCENE_SATURATION), and no group tint is added: 13 hues on the square alone stayed near chance for
a spatial stream trained from scratch, while the scene's mean colour tells them apart.

The ring gives both streams the same cap, 4x chance with 8 classes, and half the labels that
one stream cannot explain (the factorial 2 x 4 leaves the spatial stream 3/4 of them, which a
small network trained on few videos memorises rather than learning the colour).

Groups play the role of UCF101's actors/scenes: all clips of a group share one background
texture. Split ``k`` (1-3) tests on the groups ``g`` with ``(g - 1) % 3 == k - 1`` and trains
on the rest, so train and test never share a group in any split.

``python -m ingest.synthetic --out DIR`` writes ``DIR/<Class>/v_<Class>_gGG_cCC.avi`` and
``DIR/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`` (CRLF, 1-based labels, test
lists without labels). ``DIR/synthetic.json`` (the arguments) is written last and marks a
complete set; an interrupted run resumes, a run with other arguments into the same folder is
refused. Deterministic for a seed.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import math
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from core.atomic import atomic_file
from core.cli import HelpFormatter

SPLITS_DIRNAME = "ucfTrainTestlist"
DONE_NAME = "synthetic.json"  # the arguments, written when the set is complete
PARTIAL_NAME = "synthetic.partial.json"  # the arguments while it is being written
LUMA = np.array([0.299, 0.587, 0.114])
# base hues; each is rescaled to the same luma so grayscale cannot tell them apart
HUES = {"Red": (1.0, 0.15, 0.15), "Blue": (0.2, 0.4, 1.0), "Green": (0.1, 1.0, 0.1),
        "Purple": (1.0, 0.0, 1.0), "Yellow": (1.0, 1.0, 0.0), "Cyan": (0.0, 1.0, 1.0)}
DIRECTIONS = {"Left": (-1, 0), "Right": (1, 0), "Up": (0, -1), "Down": (0, 1),
              "UpLeft": (-1, -1), "UpRight": (1, -1), "DownLeft": (-1, 1), "DownRight": (1, 1)}
OBJECT_LUMA = 100.0
GENERATOR = 2  # bump when the same arguments give other videos: older sets are then refused
OBJECT_SIZE = 0.25  # side of the moving square, as a fraction of the frame width
CLASS_LISTS = {"ucf101": Path(__file__).with_name("ucf101_classInd.txt")}  # the official classInd.txt
WHEEL_SATURATION = 0.6  # wheel hues stay below 255 in every channel once scaled to OBJECT_LUMA
# A wheel class's scene (background) is tinted by its hue at this saturation, at the same luma.
# The square's hue alone (13 hues, 17 % of a 48 px crop, beside a per-group random tint) stayed
# near chance for the spatial stream in 10 epochs; a tint over the whole frame is read from
# the frame's mean colour, and a wheel set has no group tint to confound it.
SCENE_SATURATION = 0.3
WHEEL_DESIGN = 2  # a wheel set's design version (2: the scene takes the class's hue)


def read_class_list(class_list: str) -> list[str]:
    """Class names in label order from ``class_list``: a name of CLASS_LISTS or a classInd.txt
    path (``<1-based index> <name>`` per line, indices 1..K in order)."""
    path = CLASS_LISTS.get(class_list, Path(class_list))
    if not path.is_file():
        raise ValueError(f"class_list {class_list!r}: no such file (or one of {sorted(CLASS_LISTS)})")
    names = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] != str(len(names) + 1):
            raise ValueError(f"{path}:{number}: expected '{len(names) + 1} <ClassName>', got {line!r}")
        names.append(parts[1])
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"{path}: class names must be unique and at least one")
    return names


def wheel_specs(names: list[str]) -> list[tuple[str, str, str]]:
    """Named classes on a colour wheel: class k has hue k // 8 of ceil(K / 8) and motion k % 8."""
    motions, hues = list(DIRECTIONS), math.ceil(len(names) / len(DIRECTIONS))
    return [(name, f"wheel{k // len(motions)}of{hues}", motions[k % len(motions)]) for k, name in enumerate(names)]


def class_specs(classes: int, appearances: int = 2, design: str = "factorial") -> list[tuple[str, str, str]]:
    """``(class name, appearance, motion)`` per class, in label order."""
    hues, motions = list(HUES), list(DIRECTIONS)
    if design == "ring":
        if classes != 2 * appearances or not 2 <= appearances <= min(len(HUES), len(DIRECTIONS)):
            raise ValueError(f"design ring: classes={classes} must be 2 x appearances ({appearances}, "
                             f"2..{min(len(HUES), len(DIRECTIONS))})")
        pairs = [(hues[i], motions[(i + k) % appearances]) for i in range(appearances) for k in (0, 1)]
    elif design == "factorial":
        if classes % appearances or not 1 <= classes // appearances <= len(DIRECTIONS) \
                or appearances > len(HUES):
            raise ValueError(f"classes={classes} must be appearances ({appearances}, at most {len(HUES)}) "
                             f"x motions (1..{len(DIRECTIONS)})")
        pairs = [(a, m) for a in hues[:appearances] for m in motions[: classes // appearances]]
    else:
        raise ValueError(f"design must be 'factorial' or 'ring', not {design!r}")
    return [(a + m, a, m) for a, m in pairs]


def class_names(classes: int, appearances: int = 2, design: str = "factorial",
                class_list: str | None = None) -> list[str]:
    """The class names in label order (appearance-major)."""
    return [name for name, _, _ in specs_for(classes, appearances, design, class_list)]


def test_groups(split: int, groups: int) -> set[int]:
    return {g for g in range(1, groups + 1) if (g - 1) % 3 == split - 1}


def _colour(hue: str, saturation: float = WHEEL_SATURATION) -> np.ndarray:
    """RGB of an appearance (a HUES name or ``wheel<i>of<n>``, at ``saturation``) at the common luma."""
    if hue in HUES:
        base = np.array(HUES[hue])
    else:
        i, n = map(int, hue.removeprefix("wheel").split("of"))
        base = np.array(colorsys.hsv_to_rgb(i / n, saturation, 1.0))
    return base * OBJECT_LUMA / float(base @ LUMA)


def scene_tint(appearance: str, rng: np.random.Generator) -> np.ndarray:
    """Per-channel factors (luma 1) of a video's background: a wheel class's own hue
    (SCENE_SATURATION), else the group's random tint drawn from ``rng`` (the group's scene)."""
    if appearance.startswith("wheel"):
        return _colour(appearance, SCENE_SATURATION) / OBJECT_LUMA
    return rng.uniform(0.85, 1.15, size=3)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, blur: float) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), blur)
    return noise / (noise.std() + 1e-6)


def object_pattern(seed: int, width: int) -> np.ndarray:
    """The square's luma texture (mean 1), shared by every video of a set.

    One texture and a large square make the colour the only thing a single frame shares
    within a class; with a texture per video and a square of 0.15 x width, a ResNet-18 trained
    from scratch on the demo set memorised the training videos (train accuracy 97 %) and
    told the colours of test videos apart only 50-75 % of the time."""
    size = max(8, round(OBJECT_SIZE * width))
    return 1.0 + 0.35 * np.clip(_smooth_noise(np.random.default_rng([seed, 0x0B1EC7]), size, size, 2.0), -1.5, 1.5)


def _render(rng_video: np.random.Generator, background: np.ndarray, pattern: np.ndarray, appearance: str,
            direction: tuple[int, int], frames: int, width: int, height: int) -> np.ndarray:
    size = len(pattern)
    patch = np.clip(pattern[..., None] * _colour(appearance), 0, 255).astype(np.uint8)
    speed = rng_video.uniform(4.0, 6.0) * width / 320
    velocity = np.array(direction, float) / np.hypot(*direction) * speed
    start = rng_video.uniform((0, 0), (width, height))
    drift = rng_video.uniform(-0.5, 0.5, size=2) * width / 320
    travel = drift * frames
    bg_size = np.array(background.shape[1::-1]) - (width, height) - 1
    bg_start = rng_video.uniform(np.maximum(0, -travel), bg_size - np.maximum(0, travel))
    video = np.empty((frames, height, width, 3), np.uint8)
    layer = np.zeros((height, width, 3), np.uint8)
    layer[:size, :size] = patch
    mask = np.zeros((height, width), bool)
    mask[:size, :size] = True
    for t in range(frames):
        # sub-pixel window (bilinear), so the background drifts smoothly, not in 1 px jumps
        centre = bg_start + drift * t + (np.array([width, height]) - 1) / 2
        frame = cv2.getRectSubPix(background, (width, height), tuple(centre.astype(np.float32)))
        ox, oy = np.rint(start + velocity * t).astype(int) % (width, height)
        rolled = np.roll(mask, (oy, ox), axis=(0, 1))  # wraps around the edges
        frame[rolled] = np.roll(layer, (oy, ox), axis=(0, 1))[rolled]
        video[t] = frame
    return video


def _write_avi(path: Path, video: np.ndarray, fps: int) -> None:
    """MPEG-4 part 2 with FourCC XVID in AVI, written atomically."""
    with atomic_file(path, durable=False) as tmp, av.open(str(tmp), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.codec_context.codec_tag = "XVID"
        stream.width, stream.height = video.shape[2], video.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 1_000_000
        stream.codec_context.thread_count = 1  # deterministic bytes
        for image in video:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())


def write_split_lists(out: Path, names: list[str], groups: int, clips: int) -> None:
    lists = out / SPLITS_DIRNAME
    lists.mkdir(parents=True, exist_ok=True)
    _write_lines(lists / "classInd.txt", [f"{i} {n}" for i, n in enumerate(names, 1)])
    for split in (1, 2, 3):
        held_out = test_groups(split, groups)
        train, test = [], []
        for label, name in enumerate(names, 1):
            for g in range(1, groups + 1):
                for c in range(1, clips + 1):
                    rel = f"{name}/v_{name}_g{g:02d}_c{c:02d}.avi"
                    (test.append(rel) if g in held_out else train.append(f"{rel} {label}"))
        _write_lines(lists / f"trainlist0{split}.txt", train)
        _write_lines(lists / f"testlist0{split}.txt", test)


def is_complete(out: Path, **kwargs) -> bool:
    """True if ``out`` holds a finished set generated with exactly these arguments."""
    done = Path(out) / DONE_NAME
    return done.is_file() and json.loads(done.read_text()) == _arguments(**kwargs)


def _arguments(*, classes=8, groups=8, clips=2, frames=48, seed=0, width=320, height=240,
               fps=25, appearances=2, design="factorial", class_list=None) -> dict:
    args = dict(classes=classes, groups=groups, clips=clips, frames=frames, seed=seed, width=width,
                height=height, fps=fps, appearances=appearances, design=design, generator=GENERATOR)
    if class_list is not None:  # older sets' synthetic.json stay valid
        args["class_list"] = class_list
        args["wheel_design"] = WHEEL_DESIGN  # a wheel set of an older design is refused
    return args


def specs_for(classes: int, appearances: int, design: str, class_list: str | None) -> list[tuple[str, str, str]]:
    """``(name, appearance, motion)`` per class: from ``class_list`` (its first ``classes``
    names on the colour wheel) or from the design."""
    if class_list is None:
        return class_specs(classes, appearances, design)
    names = read_class_list(class_list)
    if not 1 <= classes <= len(names):
        raise ValueError(f"classes={classes}: class_list {class_list!r} has {len(names)} names "
                         f"(take 1..{len(names)} of them)")
    return wheel_specs(names[:classes])


def generate(out, *, classes: int = 8, groups: int = 8, clips: int = 2, frames: int = 48,
             seed: int = 0, width: int = 320, height: int = 240, fps: int = 25,
             appearances: int = 2, design: str = "factorial", class_list: str | None = None,
             progress: bool = True) -> Path:
    """Write the set into ``out`` (resumable: finished videos are kept) and return ``out``."""
    out = Path(out)
    args = _arguments(classes=classes, groups=groups, clips=clips, frames=frames, seed=seed,
                      width=width, height=height, fps=fps, appearances=appearances, design=design,
                      class_list=class_list)
    if groups < 3:
        raise ValueError("groups must be at least 3 so that every split has test groups")
    specs = specs_for(classes, appearances, design, class_list)
    names = [name for name, _, _ in specs]
    partial = out / PARTIAL_NAME
    for marker in (out / DONE_NAME, partial):
        if marker.is_file() and json.loads(marker.read_text()) != args:
            raise ValueError(f"{out} holds a synthetic set made with other arguments ({marker}); "
                             f"use another --out or delete it")
    if (out / DONE_NAME).is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(args))
    pattern = object_pattern(seed, width)
    jobs = [(label, spec, g, c) for label, spec in enumerate(specs)
            for g in range(1, groups + 1) for c in range(1, clips + 1)]
    for label, (name, appearance, motion), g, c in tqdm(jobs, desc="synthetic videos", disable=not progress):
        path = out / name / f"v_{name}_g{g:02d}_c{c:02d}.avi"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        # one background per group (its "scene"), one random stream per video
        background = np.random.default_rng([seed, g])
        bg = 150 + 45 * np.clip(_smooth_noise(background, 2 * height, 2 * width, 3.0), -2, 2)
        bg = np.clip(bg[..., None] * scene_tint(appearance, background), 0, 255).astype(np.uint8)
        rng = np.random.default_rng([seed, g, c, label])
        _write_avi(path, _render(rng, bg, pattern, appearance, DIRECTIONS[motion], frames, width, height), fps)
    write_split_lists(out, names, groups, clips)
    (out / DONE_NAME).write_text(json.dumps(args))
    partial.unlink()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="crossroads-synthetic", description=__doc__.split("\n")[0],
                                     epilog="exit codes: 0 written; 2 bad command line", formatter_class=HelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    for name, default in _arguments().items():
        if isinstance(default, int) and name != "generator":
            parser.add_argument(f"--{name}", type=int, default=default, help=name.replace("_", " "))
    parser.add_argument("--design", choices=["factorial", "ring"], default="factorial", help="class layout")
    parser.add_argument("--class-list", dest="class_list", default=None,
                        help="class names from 'ucf101' (the official classInd.txt) or a classInd.txt path; "
                             "--classes then takes the first N of them")
    args = vars(parser.parse_args(argv))
    try:
        out = generate(args.pop("out"), **args)
    except ValueError as exc:  # bad class count, design or class list: exit 2 with the reason
        parser.error(str(exc))
    print(f"synthetic mini-UCF101 in {out} (split lists in {out / SPLITS_DIRNAME})")


if __name__ == "__main__":
    main()
