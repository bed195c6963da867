"""SceneFlow (FlyingThings3D, Monkaa, Driving) reader.

Layout, as the datasets unpack (`root` holds both trees):

    root/frames_cleanpass/<rel>/left/<frame>.png     (or frames_finalpass with passes="final")
    root/frames_cleanpass/<rel>/right/<frame>.png
    root/disparity/<rel>/left/<frame>.pfm

where `<rel>` is any sub-path, e.g. `TRAIN/A/0000` (FlyingThings3D), `a_rain_of_stones_x2`
(Monkaa) or `15mm_focallength/scene_forwards/fast` (Driving). `subset` restricts the walk to
`frames_*pass/<subset>` (e.g. "TRAIN" or "TEST"). Images may be .png or .webp. The frame id and
sample name are `<rel>/<frame>` (e.g. `TRAIN/A/0000/0006`). Disparities are dense and positive;
PFM rows are stored bottom-up and read top-down (as the official readPFM's flipud does).
"""

from __future__ import annotations

from pathlib import Path

from stereo_depth_ros.data.samples import (
    DatasetError, FileStereoDataset, SampleFiles, pair_by_frame_id)

IMAGE_SUFFIXES = (".png", ".webp")
PASSES = {"clean": "frames_cleanpass", "final": "frames_finalpass"}


def _collect(top: Path, side: str, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """Frame id `<rel>/<frame>` -> file for files in `top/**/<side>/`."""
    found: dict[str, Path] = {}
    for path in top.rglob("*"):
        if path.parent.name != side or path.suffix.lower() not in suffixes or not path.is_file():
            continue
        rel = path.parent.parent.relative_to(top)
        frame_id = (rel / path.stem).as_posix()
        found[frame_id] = path
    return found


class SceneFlow(FileStereoDataset):
    """SceneFlow: `frames_<pass>pass/<rel>/{left,right}/*.png` + `disparity/<rel>/left/*.pfm`."""

    dataset_name = "sceneflow"

    def __init__(self, root: str | Path, *, passes: str = "clean", subset: str | None = None):
        root = Path(root)
        if passes not in PASSES:
            raise DatasetError(f"sceneflow: unknown pass {passes!r}: expected clean or final")
        if not root.is_dir():
            raise DatasetError(f"sceneflow: root directory not found: {root}")
        frames_top = root / PASSES[passes]
        disparity_top = root / "disparity"
        if not frames_top.is_dir():
            raise DatasetError(f"sceneflow: {frames_top} not found (expected "
                               f"{PASSES[passes]}/<rel>/left/*.png under {root})")
        if subset:
            frames_top, disparity_top = frames_top / subset, disparity_top / subset
            if not frames_top.is_dir():
                raise DatasetError(f"sceneflow: subset folder {frames_top} not found")
        lefts = _collect(frames_top, "left", IMAGE_SUFFIXES)
        if not lefts:
            raise DatasetError(f"sceneflow: no images in {frames_top}/**/left/ "
                               f"(suffixes {', '.join(IMAGE_SUFFIXES)})")
        rights = _collect(frames_top, "right", IMAGE_SUFFIXES)
        groups = {f"{frames_top.name}/**/left": lefts, f"{frames_top.name}/**/right": rights}
        gts: dict[str, Path] = {}
        if disparity_top.is_dir():
            gts = _collect(disparity_top, "left", (".pfm",))
            groups["disparity/**/left"] = gts
        ids = pair_by_frame_id(groups, pattern="<rel>/{left,right}/<frame>.png, "
                               "disparity/<rel>/left/<frame>.pfm", dataset=self.dataset_name,
                               root=root)
        prefix = "" if not subset else subset.strip("/") + "/"
        files = [SampleFiles(frame_id=prefix + i, name=prefix + i, left=lefts[i],
                             right=rights[i], disparity=gts.get(i)) for i in ids]
        super().__init__(files)
