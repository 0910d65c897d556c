"""DISTS, deep image structure and texture similarity (Ding et al., TPAMI 2020): lower means
more alike.

Both images (RGB in [0, 1]) go through VGG16's convolutional part, ImageNet-normalised, with
each max pool replaced by L2 pooling (:class:`L2Pool`). Six representations are compared: the
image itself and the features at ``relu1_2``, ``relu2_2``, ``relu3_3``, ``relu4_3`` and
``relu5_3`` (3, 64, 128, 256, 512 and 512 channels). For every channel, a texture term compares
the two global means and a structure term the global covariance with the two variances; the
learned per-channel weights alpha (texture) and beta (structure), divided by their total sum,
average them, and DISTS is one minus that average. This is the authors' package DISTS-pytorch
0.1, to float rounding. VGG16 comes from torchvision's ImageNet file and alpha/beta from the
authors' ``weights.pt``, fetched by sha256 (:mod:`src.io.weights`), given as a folder
holding them, or random (tests only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from src.archs.vgg_features import VGGFeatures
from src.io.weights import DEFAULT_CACHE, load_weights
from src.utils.errors import UserError

STAGES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
CHANNELS = (3, 64, 128, 256, 512, 512)
C1 = 1e-6
C2 = 1e-6
SQRT_EPS = 1e-12


def hanning_window() -> torch.Tensor:
    """The official 3x3 pooling window: the outer product of a 5-tap Hann window without its
    zero ends, (0.5, 1, 0.5), normalised to sum 1."""
    taps = torch.hann_window(5, periodic=False, dtype=torch.float64)[1:-1]
    window = taps[:, None] * taps[None, :]
    return (window / window.sum()).float()


class L2Pool(nn.Module):
    """sqrt of the Hann-weighted mean of x^2 over 3x3 windows, stride 2, one pixel of zero
    padding: DISTS's replacement for VGG's max pooling, which aliases."""

    window: torch.Tensor

    def __init__(self, channels: int):
        super().__init__()
        window = hanning_window().expand(channels, 1, 3, 3).clone()
        self.register_buffer("window", window, False)  # not in torchvision's state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.conv2d(x**2, self.window, stride=2, padding=1, groups=x.shape[1])
        return (pooled + SQRT_EPS).sqrt()


def similarities(one: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel texture (means) and structure (covariance) similarities, each (N, C)."""
    mean_one, mean_other = one.mean(dim=(2, 3)), other.mean(dim=(2, 3))
    var_one = (one - mean_one[..., None, None]).pow(2).mean(dim=(2, 3))
    var_other = (other - mean_other[..., None, None]).pow(2).mean(dim=(2, 3))
    covariance = (one * other).mean(dim=(2, 3)) - mean_one * mean_other
    texture = (2 * mean_one * mean_other + C1) / (mean_one**2 + mean_other**2 + C1)
    structure = (2 * covariance + C2) / (var_one + var_other + C2)
    return texture, structure


class DISTS(nn.Module):
    """Per-image DISTS distance of (N, 3, H, W) images in [0, 1]."""

    alpha: torch.Tensor
    beta: torch.Tensor

    def __init__(
        self,
        weights: str = "download",
        cache_dir: str = str(DEFAULT_CACHE),
        key: str = "metric_weights",
    ):
        super().__init__()
        self.vgg = VGGFeatures(STAGES, "vgg16", normalize=True, pool=L2Pool)
        # The authors' initialisation, kept when the weights are random.
        self.register_buffer("alpha", torch.empty(1, sum(CHANNELS), 1, 1).normal_(0.1, 0.01))
        self.register_buffer("beta", torch.empty(1, sum(CHANNELS), 1, 1).normal_(0.1, 0.01))
        self.weights_spec, self.cache_dir, self.key = weights, cache_dir, key
        self.requires_grad_(False).eval()
        self._loaded = False

    def prepare(self) -> None:
        """Load VGG16's ImageNet weights and DISTS's alpha and beta (once)."""
        if self._loaded:
            return
        backbone = load_weights(self.weights_spec, "vgg16", self.key, self.cache_dir)
        if backbone is not None:
            self.vgg.load_torchvision(backbone)
        learned = load_weights(self.weights_spec, "dists", self.key, self.cache_dir)
        if learned is not None:
            self.load_alpha_beta(learned)
        self._loaded = True

    def load_alpha_beta(self, learned: dict[str, torch.Tensor]) -> None:
        """Take ``alpha`` and ``beta`` from the authors' file layout, each (1, 1475, 1, 1)."""
        shape = (1, sum(CHANNELS), 1, 1)
        for name in ("alpha", "beta"):
            value = learned.get(name)
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                found = {k: tuple(getattr(v, "shape", ())) for k, v in learned.items()}
                raise UserError(
                    f"{self.key}: the DISTS file needs {name} of shape {shape}: {found}"
                )
            getattr(self, name).copy_(value)

    def representations(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The image itself (not normalised) and its five VGG stages."""
        features = self.vgg(image)
        return [image, *(features[name] for name in STAGES)]

    @torch.no_grad()
    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return self.distance(sr, hr)

    def distance(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Per-image DISTS with gradients flowing to ``sr`` (DISTS as a training loss); the
        network itself stays frozen and ``hr`` is taken as a constant."""
        self.prepare()
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha.flatten() / total, list(CHANNELS))
        betas = torch.split(self.beta.flatten() / total, list(CHANNELS))
        similarity = sr.new_zeros(sr.shape[0])
        with torch.no_grad():
            reference = self.representations(hr)
        pairs = zip(self.representations(sr), reference, strict=True)
        for (one, other), a, b in zip(pairs, alphas, betas, strict=True):
            texture, structure = similarities(one, other)
            similarity = similarity + (texture * a).sum(dim=1) + (structure * b).sum(dim=1)
        return 1 - similarity
