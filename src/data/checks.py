"""Set-up checks on decoded images, with one policy for what fails them.

Everything that could make a training step fail is checked once, when the data module is set up,
never in the middle of an epoch. :func:`refuse_or_skip` applies ``on_bad_image``: ``error`` raises
:class:`~src.io.images.ImageReadError` listing every problem (so one run shows them all), and
``skip`` warns with the same list and carries on without those images.
"""

from __future__ import annotations

import warnings

from src.data.sources import DatasetNotFoundError, OnBadImage
from src.io.images import ImageReadError, NamedImage

MAX_LISTED = 20


def listing(problems: list[str]) -> str:
    """Problems one per line, the first :data:`MAX_LISTED` of them."""
    lines = problems[:MAX_LISTED]
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more")
    return "\n  " + "\n  ".join(lines)


def refuse_or_skip(problems: list[str], on_bad_image: OnBadImage, what: str, fix: str) -> None:
    """Raise (``error``) or warn (``skip``) about ``problems``; nothing happens when there are
    none. ``what`` says what kind of problem it is; ``fix`` what the user can do about it."""
    if not problems:
        return
    if on_bad_image == "error":
        raise ImageReadError(
            f"{len(problems)} {what}:{listing(problems)}\n{fix}, or set data.on_bad_image=skip "
            f"to leave them out"
        )
    warnings.warn(f"skipped {len(problems)} {what}:{listing(problems)}", stacklevel=3)


def size_text(pixels_shape: tuple[int, ...]) -> str:
    """``W x H`` of an (H, W, ...) shape, the way image sizes are usually written."""
    return f"{pixels_shape[1]}x{pixels_shape[0]}"


def fit_patches(
    images: list[NamedImage],
    set_name: str,
    scale: int,
    lr_patch_size: int,
    on_bad_image: OnBadImage,
) -> list[NamedImage]:
    """The images from which an ``lr_patch_size x scale`` HR patch can be cut (after the
    mod-crop); smaller ones are refused or skipped by :func:`refuse_or_skip`."""
    hr_patch = lr_patch_size * scale
    usable, problems = [], []
    for image in images:
        height, width = (side - side % scale for side in image.pixels.shape[:2])
        if min(height, width) >= hr_patch:
            usable.append(image)
        else:
            where = image.path or f"{set_name}/{image.name}"
            problems.append(f"{where} ({size_text(image.pixels.shape)})")
    refuse_or_skip(
        problems,
        on_bad_image,
        f"image(s) of {set_name} smaller than the HR patch of {hr_patch}x{hr_patch} px "
        f"(data.lr_patch_size={lr_patch_size} x scale {scale})",
        "Lower data.lr_patch_size",
    )
    if not usable:
        raise DatasetNotFoundError(
            f"{set_name}: no image is large enough for HR patches of {hr_patch} px; lower "
            f"data.lr_patch_size"
        )
    return usable
