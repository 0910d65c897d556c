"""``data.channels=auto``: the channel count of a data set, read from its files' headers.

The networks are built before any image is decoded, with ``model.net.*channels`` interpolated
from ``data.channels``, so the count ``auto`` stands for is read from the file headers (Pillow
reads a header without decoding the pixels) before anything is instantiated: 1 when every file of
the training and validation sets is single-channel, 3 otherwise. It is returned, not written into
the config: callers give it to the data module and, through
:func:`src.utils.config.interpolation_overrides`, to every setting that reads ``data.channels``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.data.sources import source_files
from src.io.images import DICOM_SUFFIXES, header_only_pil
from src.utils.config import interpolation_overrides
from src.utils.runtime import say

# Pillow modes of single-channel files (8-bit, 16-bit, 32-bit integer or float gray, with or
# without alpha).
SINGLE_CHANNEL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def is_single_channel_file(path: Path) -> bool:
    """True when ``path``'s header says it holds one channel (plus alpha, maybe); DICOM slices
    are read as grayscale (colour ones are refused when decoded)."""
    from PIL import Image

    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    with header_only_pil(), Image.open(path) as image:
        return image.mode in SINGLE_CHANNEL_MODES


def data_files(data: DictConfig, scale: int | None = None) -> list[Path]:
    """The files of the training and validation sets of a ``data`` config (bundled photos
    and other sources without files contribute none); ``scale``: the one the run uses, where it
    is not the config's (a checkpoint's)."""
    parts = [data.get("train_set"), *(data.get("val_sets") or [])]
    files: list[Path] = []
    for part in parts:
        if part is None:
            continue
        at_scale = scale is not None and isinstance(part, DictConfig)
        scaled = interpolation_overrides(part, "scale", scale) if at_scale else {}
        listed = source_files(hydra.utils.instantiate(part, **scaled))
        files.extend(listed or [])
    return files


def resolve_auto_channels(cfg: DictConfig, scale: int | None = None) -> int:
    """The data's channel count: ``data.channels``, or for ``auto`` 1 or 3 from the data's file
    headers (read at ``scale``, where given). ``cfg`` is left as it is."""
    data = cfg.get("data")
    setting = 3 if data is None else data.get("channels", 3)
    if str(setting) != "auto":
        return int(setting)
    files = data_files(data, scale)
    single = bool(files) and all(is_single_channel_file(path) for path in files)
    channels = 1 if single else 3
    say(f"data.channels=auto: {channels} ({len(files)} file headers read)")
    return channels
