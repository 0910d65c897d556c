"""Structure, frequency and colour losses for ``conf/loss``, each after its paper or library.

* :class:`MSSSIMLoss`: 1 - MS-SSIM (Wang, Simoncelli and Bovik, Asilomar 2003), computed by
  torchmetrics' ``multiscale_structural_similarity_index_measure``. Beside an L1 term, 0.84 x
  it + 0.16 x L1 is Zhao, Gallo, Frosio and Kautz's mix ("Loss Functions for Image Restoration
  with Neural Networks", IEEE TCI 2017), ``loss=msssim_l1``.
* :class:`FocalFrequencyLoss`: Jiang, Dai, Wu and Loy, "Focal Frequency Loss for Image
  Reconstruction and Synthesis" (ICCV 2021): the squared distance between orthonormal 2-D DFTs,
  each frequency weighted by its own (detached, normalised) distance to the power alpha.
* :class:`FFTLoss`: L1 between the real and imaginary parts of the images' 2-D real FFTs, the
  frequency loss of MIMO-UNet (Cho et al., "Rethinking Coarse-to-Fine Approach in Single Image
  Deblurring", ICCV 2021) and traiNNer-redux's ``FFTLoss``. Comparing both parts penalises
  amplitude and phase errors together.
* :class:`LumaLoss` and :class:`ChromaLoss`: L1 (or L2) on BT.601 studio-swing Y, or on Cb and Cr,
  the conversion the metrics use (:func:`src.ops.color.rgb_to_ycbcr`); the colour and luma
  losses of traiNNer-redux and neosr (which use CIE L* for luma: SR Lab keeps the metrics' Y).
* :class:`GradientVarianceLoss`: Abrahamyan, Truong, Philips and Deligiannis, "Gradient Variance
  Loss for Structure-Enhanced Image Super-Resolution" (ICASSP 2022): the MSE between the
  variances of non-overlapping patches of the Sobel gradient maps, x and y summed.

DISTS as a loss sits beside the VGG loss in :mod:`src.models.losses` (``DISTSLoss``), where the
weights of frozen networks are prepared. All of these compute in float32 with autocast off
(bf16 rounding would swamp variances and spectra) and take (N, C, H, W) images, or clips
(N, T, C, H, W) as N x T images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

from src.models.losses import distance
from src.ops.color import rgb_to_ycbcr
from src.utils.construction import RecordsArguments
from src.utils.errors import UserError
from src.utils.schema import Range, describe_type, matches

# MS-SSIM's scale weights (Wang et al. 2003), finest scale first, as torchmetrics has them.
WANG_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# torchmetrics' default window: 11 taps (Gaussian, sigma 1.5).
SSIM_WINDOW = 11
Scales = Annotated[int, Range(low=1, high=len(WANG_BETAS))]
PositiveAlpha = Annotated[float, Range(low=0, low_open=True)]
PatchFactor = Annotated[int, Range(low=1)]
VariancePatch = Annotated[int, Range(low=2)]
Pooling = Annotated[int, Range(low=1)]
FftNorm = Literal["backward", "ortho", "forward"]
Criterion = Literal["l1", "l2"]
# The authors' grayscale (MATLAB rgb2gray, BT.601 luma weights without the studio offset) and
# Sobel kernels of the gradient variance loss.
GV_GRAY = (0.2989, 0.5870, 0.1140)
SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
SOBEL_Y = ((1.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-1.0, -2.0, -1.0))


def check_setting(owner: str, name: str, value: Any, annotation: Any) -> None:
    """A constructor's refusal of a setting outside ``annotation`` (the schema's own rule)."""
    if not matches(value, annotation):
        raise ValueError(f"{owner}: {name} must be {describe_type(annotation)}, got {value!r}")


def as_float_images(image: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float32: clips (N, T, C, H, W) become N x T images."""
    return image.flatten(0, -4).float()


def autocast_off(like: torch.Tensor) -> torch.autocast:
    return torch.autocast(like.device.type, enabled=False)


def msssim_betas(scales: int) -> tuple[float, ...]:
    """Wang et al.'s first ``scales`` weights, scaled to sum 1 (the five sum to 1.0001), so that
    fewer scales still give a weighted geometric mean of the scales' similarities."""
    kept = WANG_BETAS[:scales]
    return tuple(beta / sum(kept) for beta in kept)


def msssim_min_side(scales: int) -> int:
    """The smallest image side torchmetrics computes ``scales`` scales on with its 11-tap window:
    its own check (at least 2^scales, and side // max(1, scales - 1)^2 above 10) and, which that
    check misses at two scales, a coarsest scale wider than the 5 px it reflects at each border."""
    border = SSIM_WINDOW // 2
    checked = max(2**scales, SSIM_WINDOW * max(1, scales - 1) ** 2)
    return max(checked, (border + 1) * 2 ** (scales - 1))


def msssim_scales_fitting(side: int) -> int:
    """The most scales an image with ``side`` pixels on its short side allows (0: none)."""
    fitting = [n for n in range(1, len(WANG_BETAS) + 1) if msssim_min_side(n) <= side]
    return max(fitting, default=0)


class MSSSIMLoss(RecordsArguments, nn.Module):
    """1 - MS-SSIM(sr, hr) over ``scales`` scales, images in [0, 1] (torchmetrics, with its
    ``normalize="relu"`` for training stability).

    Five scales are the standard MS-SSIM and need HR patches of at least 176 px a side; three
    fit 44 px and up (the default 48-px LR patches at x2 give 96 px). A smaller patch stops the
    run with an error naming ``key``."""

    def __init__(self, scales: int = 5, key: str = "model.loss.terms.msssim.loss.scales"):
        super().__init__()
        check_setting("MSSSIMLoss", "scales", scales, Scales)
        self.scales, self.key = scales, key
        self.betas = msssim_betas(scales)

    def check_size(self, image: torch.Tensor) -> None:
        height, width = image.shape[-2:]
        needed = msssim_min_side(self.scales)
        if min(height, width) >= needed:
            return
        fitting = msssim_scales_fitting(min(height, width))
        advice = f"set {self.key}={fitting} or raise" if fitting else "raise"
        raise UserError(
            f"{self.key}={self.scales} needs HR patches of at least {needed} px a side, got "
            f"{height}x{width}: {advice} data.lr_patch_size"
        )

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        self.check_size(sr)
        with autocast_off(sr):
            score = multiscale_structural_similarity_index_measure(
                sr, hr, data_range=1.0, betas=self.betas, normalize="relu"
            )
        assert isinstance(score, torch.Tensor)  # a tuple only when asked for the full map
        return 1.0 - score


def frequency_patches(image: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, C, H, W) cut into factor x factor tiles, (N, factor^2, C, H / factor, W / factor),
    row-major as the focal frequency loss's authors stack them."""
    n, c, h, w = image.shape
    if h % factor or w % factor:
        raise UserError(
            f"FocalFrequencyLoss: patch_factor={factor} must divide the image sides, got {h}x{w}"
        )
    tiles = image.reshape(n, c, factor, h // factor, factor, w // factor)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(n, factor * factor, c, h // factor, w // factor)


class FocalFrequencyLoss(RecordsArguments, nn.Module):
    """mean(W * |F(sr) - F(hr)|^2), F the orthonormal 2-D DFT of each tile (``patch_factor``).

    W is |F(sr) - F(hr)|^alpha, optionally log(1 + .)-compressed (``log_matrix``), divided by its
    maximum per image, tile and channel (or over the whole batch: ``batch_matrix``), and held
    constant. ``ave_spectrum`` compares the batch-mean spectra. Defaults are the authors'."""

    def __init__(
        self,
        alpha: float = 1.0,
        patch_factor: int = 1,
        ave_spectrum: bool = False,
        log_matrix: bool = False,
        batch_matrix: bool = False,
    ):
        super().__init__()
        check_setting("FocalFrequencyLoss", "alpha", alpha, PositiveAlpha)
        check_setting("FocalFrequencyLoss", "patch_factor", patch_factor, PatchFactor)
        self.alpha, self.patch_factor = float(alpha), patch_factor
        self.ave_spectrum, self.log_matrix, self.batch_matrix = (
            ave_spectrum,
            log_matrix,
            batch_matrix,
        )

    def spectrum(self, image: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.fft2(frequency_patches(image, self.patch_factor), norm="ortho")
        return spectrum.mean(dim=0, keepdim=True) if self.ave_spectrum else spectrum

    @torch.no_grad()
    def spectrum_weights(self, squared_distance: torch.Tensor) -> torch.Tensor:
        weights = squared_distance.sqrt() ** self.alpha
        if self.log_matrix:
            weights = torch.log1p(weights)
        if self.batch_matrix:
            weights = weights / weights.max()
        else:
            weights = weights / weights.amax(dim=(-2, -1), keepdim=True)
        return torch.nan_to_num(weights, nan=0.0).clamp(0.0, 1.0)  # 0 / 0 where sr == hr

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        with autocast_off(sr):
            difference = self.spectrum(sr) - self.spectrum(hr)
            squared_distance = torch.view_as_real(difference).square().sum(dim=-1)
            return (self.spectrum_weights(squared_distance) * squared_distance).mean()


class FFTLoss(RecordsArguments, nn.Module):
    """mean(|Re dF| and |Im dF|), dF = rfft2(sr) - rfft2(hr) over each image and channel.

    ``norm`` is torch.fft's: ``backward`` (unscaled, as MIMO-UNet and traiNNer-redux use it: the
    loss grows with the patch side) or ``ortho`` (1 / sqrt(H W): comparable across patch
    sizes)."""

    def __init__(self, norm: FftNorm = "backward"):
        super().__init__()
        check_setting("FFTLoss", "norm", norm, FftNorm)
        self.norm = norm

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        with autocast_off(sr):
            difference = torch.fft.rfft2(sr, norm=self.norm) - torch.fft.rfft2(hr, norm=self.norm)
            return torch.view_as_real(difference).abs().mean()


def ycbcr(image: torch.Tensor, owner: str) -> torch.Tensor:
    """BT.601 YCbCr of RGB images in [0, 1] (:func:`src.ops.color.rgb_to_ycbcr`)."""
    if image.shape[1] != 3:
        raise UserError(
            f"{owner} compares colour channels and needs RGB images, got {image.shape[1]} "
            "channel(s): leave it out of the loss for single-channel data"
        )
    return rgb_to_ycbcr(image)


class LumaLoss(RecordsArguments, nn.Module):
    """L1 (or L2: ``criterion``) between the BT.601 Y channels, the Y that PSNR_Y scores."""

    def __init__(self, criterion: Criterion = "l1"):
        super().__init__()
        check_setting("LumaLoss", "criterion", criterion, Criterion)
        self.criterion = distance(criterion)

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        with autocast_off(sr):
            return self.criterion(ycbcr(sr, "LumaLoss")[:, :1], ycbcr(hr, "LumaLoss")[:, :1])


class ChromaLoss(RecordsArguments, nn.Module):
    """L1 (or L2: ``criterion``) between the BT.601 Cb and Cr channels, after a ``pool`` x
    ``pool`` average (1: none; traiNNer-redux's colour loss pools by 4, comparing colour at a
    coarser resolution than detail)."""

    def __init__(self, criterion: Criterion = "l1", pool: int = 1):
        super().__init__()
        check_setting("ChromaLoss", "criterion", criterion, Criterion)
        check_setting("ChromaLoss", "pool", pool, Pooling)
        self.criterion, self.pool = distance(criterion), pool

    def chroma(self, image: torch.Tensor) -> torch.Tensor:
        chroma = ycbcr(image, "ChromaLoss")[:, 1:]
        return F.avg_pool2d(chroma, self.pool) if self.pool > 1 else chroma

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        with autocast_off(sr):
            return self.criterion(self.chroma(sr), self.chroma(hr))


def kernels(rows: Sequence[Sequence[Sequence[float]]], like: torch.Tensor) -> torch.Tensor:
    """Single-channel 2-D kernels as conv2d weights (K, 1, k, k) on ``like``'s device."""
    return torch.tensor(rows, dtype=like.dtype, device=like.device).unsqueeze(1)


class GradientVarianceLoss(RecordsArguments, nn.Module):
    """sum over x and y of MSE(var(patches of G(sr)), var(patches of G(hr))).

    G is the Sobel gradient (zero padding) of the authors' grayscale; the patches are
    non-overlapping ``patch_size`` squares (a remainder at the right and bottom is left out, as
    ``nn.Unfold`` does) and the variance is the unbiased one. The authors' patch size is 8 and
    their weight 0.01 beside MSE."""

    def __init__(self, patch_size: int = 8):
        super().__init__()
        check_setting("GradientVarianceLoss", "patch_size", patch_size, VariancePatch)
        self.patch_size = patch_size

    def gray(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[1] == 1:
            return image
        if image.shape[1] != 3:
            raise UserError(
                f"GradientVarianceLoss takes RGB or single-channel images, got {image.shape[1]}"
            )
        weights = torch.tensor(GV_GRAY, dtype=image.dtype, device=image.device)
        return torch.einsum("c,nchw->nhw", weights, image).unsqueeze(1)

    def variances(self, image: torch.Tensor) -> torch.Tensor:
        """(N, 2, L): each patch's gradient variance, x then y."""
        gradients = F.conv2d(self.gray(image), kernels((SOBEL_X, SOBEL_Y), image), padding=1)
        patches = F.unfold(gradients, self.patch_size, stride=self.patch_size)
        n, _, count = patches.shape
        return patches.reshape(n, 2, self.patch_size**2, count).var(dim=2)

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        sr, hr = as_float_images(preds), as_float_images(target)
        if min(sr.shape[-2:]) < self.patch_size:
            raise UserError(
                f"GradientVarianceLoss: patch_size={self.patch_size} is larger than the images "
                f"({sr.shape[-2]}x{sr.shape[-1]})"
            )
        with autocast_off(sr):
            squared = (self.variances(sr) - self.variances(hr)).square()
            return squared.mean(dim=(0, 2)).sum()
