"""``data.channels=auto``: the channel count of a data set, read from its files' headers.

The networks are built before any image is decoded, with ``model.net.*channels`` interpolated
from ``data.channels``, so ``auto`` is replaced by 1 or 3 from the file headers (Pillow reads a
header without decoding the pixels) before anything is instantiated: 1 when every file of the
training and validation sets is single-channel, 3 otherwise.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from src.data.sources import source_files
from src.io.images import DICOM_SUFFIXES, header_only_pil
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


def data_files(data: DictConfig) -> list[Path]:
    """The files of the training and validation sets of a ``data`` config (bundled photos
    and other sources without files contribute none)."""
    parts = [data.get("train_set"), *(data.get("val_sets") or [])]
    files: list[Path] = []
    for part in parts:
        if part is None:
            continue
        listed = source_files(hydra.utils.instantiate(part))
        files.extend(listed or [])
    return files


def resolve_auto_channels(cfg: DictConfig) -> None:
    """Replace ``data.channels=auto`` in ``cfg`` by 1 or 3 from the data's file headers."""
    data = cfg.get("data")
    if data is None or str(data.get("channels", 3)) != "auto":
        return
    files = data_files(data)
    single = bool(files) and all(is_single_channel_file(path) for path in files)
    channels = 1 if single else 3
    with open_dict(cfg):
        cfg.data.channels = channels
    say(f"data.channels=auto: {channels} ({len(files)} file headers read)")
