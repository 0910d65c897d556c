"""Losses: pixel (Charbonnier beside torch's L1/MSE), perceptual (VGG features), adversarial, and a
weighted sum of any of them (``conf/loss``).

* :class:`PerceptualLoss` compares VGG19 (or VGG16) features of SR and HR at chosen layers, each
  with its weight: ESRGAN's ``conv5_4`` before the activation, or Real-ESRGAN's five
  ``conv*_*`` layers before theirs (``{conv1_2: 0.1, conv2_2: 0.1, conv3_4: 1, conv4_4: 1,
  conv5_4: 1}``). Its weights are torchvision's ImageNet file, fetched by checksum and cached
  (:mod:`src.io.weights`); ``weights=PATH`` offline; ``weights=random`` for tests only.
* :class:`DISTSLoss` is DISTS (Ding et al., TPAMI 2020) as a training loss: the metric's network
  (:mod:`src.metrics.dists`, VGG16 with L2 pooling and the authors' learned alpha/beta), frozen
  and kept out of the module tree and checkpoints as the VGG is; its files come by the same
  checksum mechanism (``weights=download|PATH|random``).
* :class:`GANLoss` gives the discriminator's and the generator's adversarial losses for the
  vanilla (non-saturating), least-squares, hinge, WGAN(-GP) and relativistic-average (ESRGAN)
  formulations, from the discriminator's logits on real and fake images.
* :class:`ArtifactLoss` is LDL's locally discriminative artifact loss (Liang et al., "Details or
  Artifacts", CVPR 2022): an L1 between SR and HR weighted by a map of where the generator's
  residual is locally noisy and worse than its EMA copy's; the GAN module feeds it the EMA's SR.
* :class:`CompositeLoss` sums named terms with weights and keeps each term's last value for
  logging (``train/loss_<name>``).

Each records its constructor arguments (:mod:`src.utils.construction`), and
:func:`torch_loss_arguments` describes torch's own parameter-free losses, so a module's loss is
saved with the config that rebuilds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from src.archs.vgg_features import Variant, VGGFeatures
from src.io.weights import DEFAULT_CACHE, DOWNLOAD, load_weights
from src.metrics.dists import DISTS
from src.utils.choices import CRITERIA, GAN_LOSS_KINDS
from src.utils.construction import RecordsArguments
from src.utils.schema import OddWindow, describe_type, matches


class CharbonnierLoss(RecordsArguments, nn.Module):
    """sqrt((x - y)^2 + eps^2), averaged: a smooth L1 (Lai et al., LapSRN, CVPR 2017)."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.sqrt((preds - target).pow(2) + self.eps**2).mean()


def distance(kind: str) -> nn.Module:
    if kind == "l1":
        return nn.L1Loss()
    if kind == "l2":
        return nn.MSELoss()
    raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {kind!r}")


class PerceptualLoss(RecordsArguments, nn.Module):
    """Sum over ``layers`` of weight x distance(VGG(sr)[layer], VGG(hr)[layer]).

    The VGG weights are loaded on first use (or by :meth:`prepare`, which the Lightning module
    calls once per node before training), so that building the loss, e.g. to rebuild a model
    from a checkpoint, never fetches anything. The network is frozen, stays in eval mode and is
    kept out of the module tree: checkpoints do not carry its 80 MB to 550 MB of fixed weights,
    and it follows the input's device when it is used.
    """

    def __init__(
        self,
        layers: Mapping[str, float] | None = None,
        variant: Variant = "vgg19",
        weights: str = DOWNLOAD,
        criterion: Literal["l1", "l2"] = "l1",
        cache_dir: str = str(DEFAULT_CACHE),
        key: str = "model.loss.perceptual.weights",
    ):
        super().__init__()
        self.layer_weights = {str(k): float(v) for k, v in (layers or {"conv5_4": 1.0}).items()}
        self.vgg: VGGFeatures
        vgg = VGGFeatures(self.layer_weights, variant).requires_grad_(False).eval()
        object.__setattr__(self, "vgg", vgg)  # not a child module: see the class docstring
        self.variant, self.weights_spec, self.cache_dir, self.key = variant, weights, cache_dir, key
        self.criterion = distance(criterion)
        self._loaded = False

    def prepare(self) -> None:
        """Load (fetching if needed) the VGG weights; once."""
        if self._loaded:
            return
        state = load_weights(self.weights_spec, self.variant, self.key, self.cache_dir)
        if state is not None:
            self.vgg.load_torchvision(state)
        self._loaded = True

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.prepare()
        self.vgg.to(preds.device)
        fake = self.vgg(preds)
        with torch.no_grad():
            real = self.vgg(target)
        total = preds.new_zeros(())
        for name, weight in self.layer_weights.items():
            total = total + weight * self.criterion(fake[name], real[name].detach())
        return total


class DISTSLoss(RecordsArguments, nn.Module):
    """The batch mean of DISTS(sr, hr) (:class:`src.metrics.dists.DISTS`), differentiable in sr.

    As the authors' package does with ``require_grad=True, batch_average=True``. The network is
    loaded on first use or by :meth:`prepare`, frozen, and kept out of the module tree like
    :class:`PerceptualLoss`'s VGG: checkpoints do not carry its weights."""

    def __init__(
        self,
        weights: str = DOWNLOAD,
        cache_dir: str = str(DEFAULT_CACHE),
        key: str = "model.loss.terms.dists.loss.weights",
    ):
        super().__init__()
        self.dists: DISTS
        object.__setattr__(self, "dists", DISTS(weights, cache_dir, key))  # not a child module

    def prepare(self) -> None:
        """Load (fetching if needed) VGG16 and DISTS's alpha and beta; once."""
        self.dists.prepare()

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.dists.to(preds.device)
        return self.dists.distance(preds.flatten(0, -4), target.flatten(0, -4)).mean()


GanKind = Literal["vanilla", "lsgan", "hinge", "wgan", "ragan"]


class GANLoss(RecordsArguments, nn.Module):
    """Adversarial losses from discriminator logits on real (HR) and fake (SR) images.

    ``ragan`` is ESRGAN's relativistic average GAN: each side judges whether a real image is
    more realistic than the average fake one, and the reverse. ``wgan`` is the critic's
    Wasserstein estimate; its gradient penalty (WGAN-GP) is added by the training module.
    """

    def __init__(self, kind: GanKind = "vanilla"):
        super().__init__()
        if kind not in GAN_LOSS_KINDS:
            raise ValueError(f"GAN loss kind must be one of {', '.join(GAN_LOSS_KINDS)}: {kind}")
        self.kind = kind

    @staticmethod
    def _bce(logits: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(logits) if real else torch.zeros_like(logits)
        return F.binary_cross_entropy_with_logits(logits, target)

    @staticmethod
    def _ls(logits: torch.Tensor, real: bool) -> torch.Tensor:
        return F.mse_loss(logits, torch.ones_like(logits) if real else torch.zeros_like(logits))

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The discriminator's loss (``fake`` from detached SR)."""
        if self.kind == "vanilla":
            return 0.5 * (self._bce(real, True) + self._bce(fake, False))
        if self.kind == "lsgan":
            return 0.5 * (self._ls(real, True) + self._ls(fake, False))
        if self.kind == "hinge":
            return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()
        if self.kind == "wgan":
            return fake.mean() - real.mean()
        return 0.5 * (self._bce(real - fake.mean(), True) + self._bce(fake - real.mean(), False))

    def generator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss (``real`` is only used by ``ragan``, detached)."""
        if self.kind == "vanilla":
            return self._bce(fake, True)
        if self.kind == "lsgan":
            return self._ls(fake, True)
        if self.kind in ("hinge", "wgan"):
            return -fake.mean()
        real = real.detach()
        return 0.5 * (self._bce(real - fake.mean(), False) + self._bce(fake - real.mean(), True))


def local_variance(image: torch.Tensor, window: int) -> torch.Tensor:
    """Unbiased variance of the ``window`` x ``window`` neighbourhood of every pixel of (N, 1,
    H, W) ``image``, its border reflected: E[x^2] - E[x]^2 from two box means, times n / (n - 1)
    (what the variance of each unfolded window gives, without unfolding)."""
    pad = window // 2
    padded = F.pad(image, (pad, pad, pad, pad), mode="reflect")
    mean = F.avg_pool2d(padded, window, stride=1)
    mean_of_squares = F.avg_pool2d(padded * padded, window, stride=1)
    n = window * window
    return (mean_of_squares - mean * mean).clamp(min=0.0) * (n / (n - 1))


def artifact_map(
    sr: torch.Tensor, hr: torch.Tensor, sr_ema: torch.Tensor, window: int = 7
) -> torch.Tensor:
    """LDL's refined artifact map, (N, 1, H, W).

    With r = sum over channels of |HR - SR|: the local variance of r (pixel level) times the
    image's variance of r to the power 1/5 (patch level), set to zero wherever the EMA model's
    residual is larger than the generator's (there the generator is not the one making
    artifacts). As in the authors' code the map is not detached: the loss also pulls on the
    residual's variance."""
    residual = (hr - sr).abs().sum(dim=1, keepdim=True)
    residual_ema = (hr - sr_ema.detach()).abs().sum(dim=1, keepdim=True)
    patch_weight = residual.var(dim=(1, 2, 3), keepdim=True).pow(0.2)
    weight = patch_weight * local_variance(residual, window)
    return weight.masked_fill(residual < residual_ema, 0.0)


class ArtifactLoss(nn.Module):
    """L1 between ``map x SR`` and ``map x HR``, the map from :func:`artifact_map`."""

    def __init__(self, window: int = 7):
        super().__init__()
        if not matches(window, OddWindow):  # the schema's rule, for Python callers too
            raise ValueError(f"window must be {describe_type(OddWindow)}, got {window}")
        self.window = window

    def forward(self, sr: torch.Tensor, hr: torch.Tensor, sr_ema: torch.Tensor) -> torch.Tensor:
        weight = artifact_map(sr, hr, sr_ema, self.window)
        return F.l1_loss(weight * sr, weight * hr)


class CompositeLoss(RecordsArguments, nn.Module):
    """sum(weight x loss(sr, hr)) over named ``terms`` ({name: {loss: module, weight: w}})."""

    def __init__(self, terms: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        if not terms:
            raise ValueError("a composite loss needs at least one term")
        self.terms = nn.ModuleDict({name: term["loss"] for name, term in terms.items()})
        self.weights = {name: float(term["weight"]) for name, term in terms.items()}
        self.last: dict[str, torch.Tensor] = {}

    def forward(self, preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = preds.new_zeros(())
        self.last = {}
        for name, loss in self.terms.items():
            value = loss(preds, target)
            self.last[name] = value.detach()
            total = total + self.weights[name] * value
        return total


# The constructor arguments of torch's parameter-free losses: the deprecated two, and reduction.
TORCH_LOSS_ARGUMENTS = frozenset({"size_average", "reduce", "reduction"})


def torch_loss_arguments(loss: Any) -> dict[str, Any] | None:
    """How one of torch's own parameter-free losses (``torch.nn.L1Loss``, ``MSELoss``, ...) was
    built, for its config: ``{}``, or ``{"reduction": ...}`` where it is not the default. None for
    anything else: a loss with weights or settings (``HuberLoss``'s delta), or a subclass from
    outside torch, whose state its arguments would not capture."""
    cls = type(loss)
    if not isinstance(loss, nn.modules.loss._Loss) or not cls.__module__.startswith("torch."):
        return None
    parameters = set(inspect.signature(cls.__init__).parameters) - {"self"}
    if not parameters <= TORCH_LOSS_ARGUMENTS:
        return None
    return {} if loss.reduction == "mean" else {"reduction": loss.reduction}


def prepare_weights(module: nn.Module) -> None:
    """Fetch and load the weights of every loss inside ``module`` that needs a file."""
    for child in module.modules():
        if isinstance(child, PerceptualLoss | DISTSLoss):
            child.prepare()
