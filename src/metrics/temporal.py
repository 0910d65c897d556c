"""Temporal consistency of a super-resolved clip against its HR clip: tOF and tLP, with the
definitions of TecoGAN (Chu et al., "Learning temporal coherence via self-supervision for
GAN-based video generation", TOG 2020), as its evaluation script ``metrics.py`` computes them.

Both compare how the SR clip changes from frame to frame with how the HR clip changes, one pair
of consecutive frames (t - 1, t) at a time; lower is better, 0 when SR changes as HR does:

* ``tof``: OpenCV's Farneback optical flow from frame t - 1 to frame t on the gray frames
  (``cv2.cvtColor`` RGB to gray of the 8-bit frames; pyramid scale 0.5, 3 levels, window 15,
  3 iterations, poly_n 5, poly_sigma 1.2, no flags), computed on whole frames for SR and for HR;
  both flow fields are cut to TecoGAN's centre window (:func:`centre_window`) and the value of
  the pair is the mean over its pixels of the Euclidean length of the flow difference, in pixels.
* ``tlp``: | LPIPS(SR_{t-1}, SR_t) - LPIPS(HR_{t-1}, HR_t) |, LPIPS v0.1 on AlexNet
  (:class:`src.metrics.lpips.LPIPS`, the network TecoGAN's script builds) of the 8-bit RGB frames
  cut to the same centre window.

A clip's value is the mean over its pairs. TecoGAN leaves out the first and last ``trim`` = 2
frames of every clip (``cutfr``), so a clip of T frames has T - 5 pairs; ``trim=0`` takes every
pair (T - 1). A clip with no pair (one frame, or T <= 2 trim + 1) scores NaN. Values are the raw
definitions (tOF in pixels, tLP in LPIPS units); TecoGAN's tables print tOF x 10 and tLP x 100
(:data:`REPORT_SCALE`; its script stores tLP already x 100 under the name ``tLP100``). Each pair's
value is returned under the index t of its later frame, for per-frame rows.

Frames are (T, 3, H, W) RGB in [0, 1], rounded to 8 bits as every SR Lab metric scores them, and
at least 48 pixels on each side (the centre window is a non-empty multiple of 32 pixels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import cv2
import numpy as np
import torch
from torch import nn

from src.metrics.paper import to_uint8_levels
from src.utils.errors import UserError

# What TecoGAN's tables multiply the raw values by ("tOF x10", "tLP x100").
REPORT_SCALE = {"tof": 10.0, "tlp": 100.0}
TECOGAN_TRIM = 2
# cv2.calcOpticalFlowFarneback's arguments after the initial flow, as TecoGAN's script passes
# them: pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags.
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
WINDOW_MULTIPLE, WINDOW_MARGIN = 32, 16

PairValues = dict[int, float]


def check_clips(sr: torch.Tensor, hr: torch.Tensor) -> None:
    """Both clips (T, 3, H, W) of one shape, frames big enough for the centre window."""
    if sr.dim() != 4 or sr.shape[1] != 3:
        raise UserError(f"temporal metrics: a clip is (T, 3, H, W) RGB, got {tuple(sr.shape)}")
    if sr.shape != hr.shape:
        raise UserError(
            f"temporal metrics: SR clip {tuple(sr.shape)} differs from HR clip {tuple(hr.shape)}"
        )
    centre_window(sr.shape[-2], sr.shape[-1])


def centred_slice(extent: int) -> slice:
    """TecoGAN's ``crop_8x8`` along one axis: the centred run whose length is the largest
    multiple of 32 that leaves at least 16 pixels out (empty below 48 pixels)."""
    size = max((extent - WINDOW_MARGIN) // WINDOW_MULTIPLE * WINDOW_MULTIPLE, 0)
    start = (extent - size) // 2
    return slice(start, start + size)


def centre_window(height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of a frame that tOF and tLP score."""
    rows, columns = centred_slice(height), centred_slice(width)
    if rows.start == rows.stop or columns.start == columns.stop:
        raise UserError(
            f"temporal metrics: frames of {height}x{width} pixels are too small; tOF and tLP "
            f"score a centre window that needs at least {WINDOW_MULTIPLE + WINDOW_MARGIN} "
            "pixels on each side"
        )
    return rows, columns


def pair_indices(frames: int, trim: int) -> range:
    """The later frame t of each scored pair (t - 1, t), with ``trim`` frames left out at each
    end of the clip."""
    if trim < 0:
        raise UserError(f"temporal metrics: trim is a number of frames >= 0, got {trim}")
    return range(trim + 1, frames - trim)


def clip_mean(pairs: Mapping[int, float]) -> float:
    """A clip's value: the mean of its pairs' values; NaN when it has no pair."""
    if not pairs:
        return math.nan
    return float(np.mean(np.fromiter(pairs.values(), dtype=np.float64)))


def gray_frames(clip: torch.Tensor) -> np.ndarray:
    """(T, H, W) uint8 gray of a (T, 3, H, W) clip in [0, 1], by OpenCV's RGB-to-gray of its
    8-bit frames."""
    levels = to_uint8_levels(clip).to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in levels])


def farneback(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 flow from one gray frame to the next, with TecoGAN's settings."""
    return cv2.calcOpticalFlowFarneback(previous, current, None, *FARNEBACK)


def flow_error_pairs(sr: torch.Tensor, hr: torch.Tensor, trim: int = TECOGAN_TRIM) -> PairValues:
    """tOF of each pair (t - 1, t) of a clip, by t: the mean length of the difference between
    SR's and HR's optical flow over the centre window, in pixels."""
    check_clips(sr, hr)
    rows, columns = centre_window(sr.shape[-2], sr.shape[-1])
    sr_gray, hr_gray = gray_frames(sr), gray_frames(hr)
    values: PairValues = {}
    for t in pair_indices(sr.shape[0], trim):
        difference = farneback(sr_gray[t - 1], sr_gray[t]) - farneback(hr_gray[t - 1], hr_gray[t])
        window = difference[rows, columns].astype(np.float64)
        values[t] = float(np.sqrt((window**2).sum(axis=-1)).mean())
    return values


def temporal_flow_error(sr: torch.Tensor, hr: torch.Tensor, trim: int = TECOGAN_TRIM) -> float:
    """tOF of a clip (raw, in pixels; TecoGAN's tables print it x 10); NaN without a pair."""
    return clip_mean(flow_error_pairs(sr, hr, trim))


def consecutive_lpips(
    clip: torch.Tensor, later: list[int], network: nn.Module, batch: int
) -> torch.Tensor:
    """LPIPS(frame t - 1, frame t) for each t in ``later``, ``batch`` pairs per forward pass."""
    distances = [
        network(clip[[t - 1 for t in chunk]], clip[chunk])
        for chunk in (later[i : i + batch] for i in range(0, len(later), batch))
    ]
    return torch.cat(distances).double().cpu()


def lpips_change_pairs(
    sr: torch.Tensor,
    hr: torch.Tensor,
    network: nn.Module,
    trim: int = TECOGAN_TRIM,
    batch: int = 8,
) -> PairValues:
    """tLP of each pair (t - 1, t) of a clip, by t: | LPIPS(SR_{t-1}, SR_t) - LPIPS(HR_{t-1},
    HR_t) | over the centre window. ``network`` is an LPIPS (:class:`src.metrics.lpips.LPIPS`,
    AlexNet for TecoGAN's tLP), run in fp32 on the clips' device."""
    check_clips(sr, hr)
    later = list(pair_indices(sr.shape[0], trim))
    if not later:
        return {}
    rows, columns = centre_window(sr.shape[-2], sr.shape[-1])
    network.to(sr.device)
    sr_frames, hr_frames = (
        (to_uint8_levels(clip[..., rows, columns]) / 255.0).float() for clip in (sr, hr)
    )
    change = consecutive_lpips(sr_frames, later, network, batch) - consecutive_lpips(
        hr_frames, later, network, batch
    )
    return dict(zip(later, change.abs().tolist(), strict=True))


def temporal_lpips(
    sr: torch.Tensor, hr: torch.Tensor, network: nn.Module, trim: int = TECOGAN_TRIM
) -> float:
    """tLP of a clip (raw; TecoGAN's tables print it x 100); NaN without a pair."""
    return clip_mean(lpips_change_pairs(sr, hr, network, trim))
