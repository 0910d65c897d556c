"""``python -m src.score``: score a folder of SR images made by any toolbox, the SR Lab way.

    python -m src.score pred=results/EDSR_x4/Set5 gt=../shared/data/benchmarks/Set5/HR scale=4

Each prediction is paired with the HR image of the same name (a suffix after it is allowed:
``baby_x4.png`` pairs with ``baby.png``; the longest matching HR name wins). A pairing that
cannot be told for sure is an error naming the files, never a guess (see
:func:`pair_with_reference`). The HR image is mod-cropped to the scale, as the LR it was made
from was; a prediction of another size is an error naming both files. ``crop_border`` pixels
(default: the scale, the papers' rule; 0: none) are cropped from each border before scoring.
Scores go through the same metric path as validation and ``src.eval``
(:func:`src.metrics.paper.score_batch` and :mod:`src.metrics.registry`), so the numbers equal
``src.eval``'s for the same SR images; results land in ``results.{json,csv,md}`` of the run,
each image's row naming the HR file it was scored against (``hr``).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from src.io.images import (
    PEAK_OF_DEPTH,
    RGB8,
    ImageReadError,
    PixelFormat,
    bit_depth_of,
    decode,
    images_in_folder,
    is_single_channel,
    to_format,
)
from src.metrics.niqe import BLOCK as NIQE_BLOCK
from src.metrics.paper import peak_of, score_batch
from src.metrics.registry import EXTRA, build_metrics
from src.metrics.report import markdown_table, summarize, write_results
from src.ops.imresize import modcrop
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.cli import quote_overrides, run_or_explain
from src.utils.errors import UserError
from src.utils.runtime import say
from src.utils.schema import check_config

SUFFIX = re.compile(r"^[_\-. ]?[A-Za-z0-9_\-. ]{0,24}$")


def names_match(prediction: str, reference: str) -> bool:
    """``baby_x4`` (or ``baby``, ``babyx4``, ``baby-SR``) is a prediction of ``baby``."""
    if prediction == reference:
        return True
    rest = prediction[len(reference) :]
    return prediction.startswith(reference) and rest[0] in "_-. xX" and bool(SUFFIX.match(rest))


def listed(paths: list[Path]) -> str:
    """``a.png and b.png``, or ``a.png, b.png and c.png``."""
    names = [path.name for path in paths]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def pair_with_reference(predictions: list[Path], references: list[Path]) -> list[tuple[Path, Path]]:
    """Each prediction with the HR file whose name it carries (the longest such name).

    Names are compared without their suffixes, since toolboxes write PNG whatever they read.
    For the same reason a prediction's suffix says nothing about which of two HR files sharing
    a name (``baby.png``, ``baby.bmp``) it was made from, so such a pair is an error naming
    both, as is a second prediction of one HR image (``baby.png`` and ``baby_x4.png``), which
    would count that image twice in the means.
    """
    by_name: dict[str, list[Path]] = {}
    for reference in references:
        by_name.setdefault(reference.stem, []).append(reference)
    longest_first = sorted(by_name, key=len, reverse=True)
    pairs: list[tuple[Path, Path]] = []
    unmatched: list[str] = []
    for prediction in predictions:
        name = next((n for n in longest_first if names_match(prediction.stem, n)), None)
        if name is None:
            unmatched.append(prediction.name)
        elif len(by_name[name]) > 1:
            raise UserError(
                f"gt: {listed(by_name[name])} share the name {name!r}, so which of them "
                f"prediction {prediction.name} is of cannot be told; keep one of them in gt"
            )
        else:
            pairs.append((prediction, by_name[name][0]))
    if unmatched:
        raise UserError(
            f"no HR image for {len(unmatched)} prediction(s): {', '.join(unmatched[:10])} "
            f"(an HR file of the same name, optionally followed by a suffix, is needed)"
        )
    check_one_prediction_each(pairs)
    return pairs


def check_one_prediction_each(pairs: list[tuple[Path, Path]]) -> None:
    """Refuse two predictions of one HR image: it would count twice in the means."""
    by_reference: dict[Path, list[Path]] = {}
    for prediction, reference in pairs:
        by_reference.setdefault(reference, []).append(prediction)
    for reference, paired in by_reference.items():
        if len(paired) > 1:
            raise UserError(
                f"pred: {listed(paired)} all pair with HR {reference.name}; keep one "
                f"prediction of each HR image in pred"
            )


def border_of(cfg: DictConfig) -> int:
    """Pixels cropped from each border before scoring: ``crop_border``, else the scale."""
    crop = cfg.get("crop_border")
    return int(cfg.scale) if crop is None else int(crop)


def check_border(image: np.ndarray, border: int, path: Path, metrics: list[str]) -> None:
    """Refuse a crop that leaves no pixels of ``image`` (or fewer than NIQE's one block)."""
    height, width = image.shape[:2]
    left = (height - 2 * border, width - 2 * border)
    if min(left) < 1:
        raise UserError(
            f"crop_border: cropping {border} pixels from each border of {path} "
            f"({width}x{height}) leaves no pixels; at most {(min(height, width) - 1) // 2} can be"
        )
    if "niqe" in metrics and min(left) < NIQE_BLOCK:
        raise UserError(
            f"metrics: niqe needs at least {NIQE_BLOCK}x{NIQE_BLOCK} pixels, but {path} "
            f"({width}x{height}) cropped by {border} pixels at each border is "
            f"{left[1]}x{left[0]}"
        )


def as_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) uint8/uint16 -> (1, C, H, W) float64 in [0, 1]."""
    peak = PEAK_OF_DEPTH[bit_depth_of(pixels)]
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).double()[None] / peak


def read(path: Path, pixel_format: PixelFormat = RGB8) -> tuple[np.ndarray, bool]:
    raw = decode(path)
    return to_format(raw, str(path), pixel_format), is_single_channel(raw)


def reference_format(reference: Path | None, channels: int) -> PixelFormat:
    """Score at the HR file's own bit depth (8 or 16; predictions are decoded to it) with
    ``channels`` (1: single-channel files on their value)."""
    depth = 8 if reference is None else bit_depth_of(decode(reference))
    return PixelFormat(depth, channels)


def score_pair(
    prediction: Path, reference: Path | None, cfg: DictConfig, extra: list[Any]
) -> dict[str, Any]:
    """One image's record: its name, the HR file it is scored against and every score."""
    scale, border = int(cfg.scale), border_of(cfg)
    pixel_format = reference_format(reference, int(cfg.get("channels", 3)))
    sr, _ = read(prediction, pixel_format)
    check_border(sr, border, prediction, list(cfg.metrics))
    record: dict[str, Any] = {"set": "", "name": prediction.stem}
    sr_tensor = as_tensor(sr)
    hr_tensor = None
    if reference is not None:
        hr, gray = read(reference, pixel_format)
        hr = modcrop(hr, scale)
        if hr.shape != sr.shape:
            raise ImageReadError(
                f"{prediction} is {sr.shape[1]}x{sr.shape[0]} but {reference} mod-cropped to "
                f"x{scale} is {hr.shape[1]}x{hr.shape[0]}"
            )
        hr_tensor = as_tensor(hr)
        raw_gray = torch.tensor([gray]) if cfg.gray == "raw" else None
        peak = peak_of(pixel_format.bit_depth or 8)
        record["hr"] = str(reference.absolute())
        record.update(score_batch(sr_tensor, hr_tensor, border, raw_gray, peak)[0].as_dict())
    for metric in extra:
        for column, values in metric(sr_tensor, hr_tensor, border).items():
            record[column] = values[0]
    return record


def score(cfg: DictConfig) -> list[dict[str, Any]]:
    """Score every prediction, write the results files and print the table."""
    check_config(cfg, "score")
    metrics = list(cfg.metrics or [])
    if not metrics:
        raise UserError("metrics must name at least one metric, e.g. metrics=[psnr,ssim]")
    predictions = images_in_folder(Path(str(cfg.pred)), "pred")
    full_reference = [m for m in metrics if m not in EXTRA or EXTRA[m].needs_reference]
    if cfg.gt is None and full_reference:
        raise UserError(f"metrics {full_reference} compare with HR images: give gt=DIR")
    cache = str(Path(cfg.paths.root_dir) / ".cache" / "weights")
    extra = build_metrics(metrics, str(cfg.metric_weights), cache)
    references: list[Path | None]
    if cfg.gt is not None:
        pairs = pair_with_reference(predictions, images_in_folder(Path(str(cfg.gt)), "gt"))
        predictions, references = [p for p, _ in pairs], [r for _, r in pairs]
    else:
        references = [None] * len(predictions)
    set_name = str(cfg.name or Path(str(cfg.pred)).name)
    started = time.perf_counter()
    records = []
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        record = score_pair(prediction, reference, cfg, extra)
        records.append({**record, "set": set_name})
        if (index + 1) % 20 == 0:
            say(f"scored {index + 1}/{len(predictions)}")
    seconds = time.perf_counter() - started
    summaries = summarize(records)
    meta = {
        "pred": str(cfg.pred),
        "gt": None if cfg.gt is None else str(cfg.gt),
        "scale": int(cfg.scale),
        "crop_border": border_of(cfg),
        "metrics": metrics,
        "seconds": round(seconds, 2),
    }
    files = write_results(Path(cfg.paths.output_dir), summaries, records, meta)
    say(f"{len(records)} images scored in {seconds:.1f} s, crop {border_of(cfg)}")
    say(markdown_table(summaries))
    say(f"results: {', '.join(str(f) for f in files)}")
    return records


@hydra.main(version_base="1.3", config_path="../conf", config_name="score")
def main(cfg: DictConfig) -> None:
    run_or_explain(lambda: score(cfg))


if __name__ == "__main__":
    sys.argv = quote_overrides(sys.argv)
    main()
