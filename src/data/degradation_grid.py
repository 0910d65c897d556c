"""One HR image through every degradation config, as a labelled grid of tiles: a visual check.

    python -m src.data.degradation_grid --image astronaut --scale 4 --out grid.png
    python -m src.data.degradation_grid --image photo.png --configs bicubic realesrgan --draws 4

``--image`` is a file, or the name of a scikit-image sample photo. The first tile is the HR crop;
then each config of ``conf/degradation`` (composed by Hydra, as ``degradation=<name>`` would
be), once if it is deterministic, ``--draws`` times otherwise (seeds 0, 1, ...). LR
tiles are enlarged back to the HR size with nearest-neighbour, so their pixels stay visible.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import hydra
import numpy as np
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from src.data.clip_degradation import degrades_clips
from src.data.degradations import Degradation
from src.data.sources import SkimageImages
from src.io.images import read_rgb, write_image
from src.ops.imresize import modcrop

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "degradation"
LABEL_HEIGHT = 22


def load_image(spec: str) -> np.ndarray:
    """A file path, or a scikit-image sample name."""
    if Path(spec).is_file():
        return read_rgb(spec)
    (image,) = SkimageImages(names=[spec]).load()
    return image.pixels


def centre_crop(image: np.ndarray, size: int, scale: int) -> np.ndarray:
    """The central ``size`` px square (the whole image when ``size`` is 0), mod-cropped."""
    if size > 0:
        height, width = image.shape[:2]
        top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
        image = image[top : top + size, left : left + size]
    return np.ascontiguousarray(modcrop(image, scale))


def load_degradation(name: str) -> Degradation:
    """Instantiate ``conf/degradation/<name>.yaml`` as the training config composes it (a
    config may extend another through its defaults list)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR.parent), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"degradation={name}"])
    GlobalHydra.instance().clear()
    return hydra.utils.instantiate(cfg.data.degradation)


def labelled(tile: np.ndarray, text: str) -> np.ndarray:
    """``tile`` under a white band carrying ``text``."""
    band = np.full((LABEL_HEIGHT, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(band, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, tile])


def tiles_for(hr: np.ndarray, names: list[str], scale: int, draws: int) -> list[np.ndarray]:
    """The HR tile, then each degradation's LR enlarged to the HR size, labelled."""
    tiles = [labelled(hr, f"HR {hr.shape[1]}x{hr.shape[0]}")]
    for name in names:
        degradation = load_degradation(name)
        for seed in range(1 if degradation.deterministic else draws):
            lr = degradation(hr, scale, np.random.default_rng(seed))
            shown = cv2.resize(lr, hr.shape[1::-1], interpolation=cv2.INTER_NEAREST)
            suffix = "" if degradation.deterministic else f" #{seed}"
            tiles.append(labelled(shown, f"{name}{suffix} x{scale}"))
    return tiles


def grid(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tiles of one size in rows of ``columns``, on a white background."""
    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        top = gap + (index // columns) * (height + gap)
        left = gap + (index % columns) * (width + gap)
        canvas[top : top + height, left : left + width] = tile
    return canvas


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", default="astronaut", help="file, or scikit-image sample name")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("degradation_grid.png"))
    parser.add_argument("--crop", type=int, default=192, help="HR crop side in px; 0: whole")
    parser.add_argument("--draws", type=int, default=2, help="draws of each random config")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument(
        "--configs",
        nargs="*",
        default=None,
        help="names in conf/degradation (default: every one that degrades images)",
    )
    return parser.parse_args(argv)


def image_configs() -> list[str]:
    """The ``conf/degradation`` names that degrade images (not RealBasicVSR's per-clip one)."""
    names = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    return [name for name in names if not degrades_clips(load_degradation(name))]


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.configs is None:
        args.configs = image_configs()
    hr = centre_crop(load_image(args.image), args.crop, args.scale)
    picture = grid(tiles_for(hr, args.configs, args.scale, args.draws), args.columns)
    write_image(args.out, picture)
    print(f"wrote {args.out} ({len(args.configs)} configs, {picture.shape[1]}x{picture.shape[0]})")
    return args.out


if __name__ == "__main__":
    main()
