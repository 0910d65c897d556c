"""GANModule: adversarial SR training (SRGAN, ESRGAN, Real-ESRGAN) as an SRModule with a critic.

Everything that is not adversarial is the SRModule's: the generator ``net``, its inference path
(validation, eval, predict and export use the generator, its EMA when there is one), the metrics,
the checkpoints and their resume. Added here: a ``discriminator`` (``conf/discriminator``), its
optimiser and scheduler, and Lightning's manual optimisation of one generator step and one
discriminator step per batch:

1. generator: ``loss(sr, hr)`` (pixel and perceptual terms, ``conf/loss``) plus ``gan_weight`` x
   the adversarial loss of the discriminator's verdict on SR, with the discriminator frozen;
2. discriminator: the adversarial loss on HR (real) against detached SR (fake), plus
   ``gp_weight`` x the gradient penalty for WGAN-GP.

``artifact_weight`` > 0 adds LDL's artifact loss (Liang et al., CVPR 2022) to the generator's:
it compares SR with the EMA generator's SR of the same batch (one more forward pass, without
gradient), so it needs ``ema_decay``.

Clips train as images do: a video network's SR clip (N, T, C, H, W) meets the content losses and
the critic as N x T frames (mmagic's RealBasicVSR views them so); an image network on clip data
sees the frames (:meth:`SRModule.training_pair`). ``clean_weight`` > 0 adds RealBasicVSR's
cleaning loss: L1 between the network's cleaned LR (``forward_with_cleaned``) and the content
target averaged over ``scale`` x ``scale`` blocks (mmagic's ``area`` resize by 1/4 of the pixel
loss's target, the sharpened HR under ``data.sharpen_target``), logged as ``train/loss_clean``.
Without a ``discriminator`` the module trains the generator alone on those losses: the
PSNR-oriented first stage of RealBasicVSR, which mmagic trains with the same model class.

``trainer.max_steps`` counts generator steps: the discriminator's optimiser is stepped directly,
so Lightning's step counter (and with it the patch schedule, the checkpoints and the resume
point) advances once per batch, as in PSNR training. Gradients are clipped by norm
(``clip_grad_norm``, ``d_clip_grad_norm``); bf16 autocast works as elsewhere, 16-mixed does not
(its gradient scaler would need the direct step to go through Lightning).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.models.losses import ArtifactLoss, GANLoss
from src.models.sr_module import (
    OptimizerFactory,
    SchedulerFactory,
    SRModule,
    build_optimizer,
    build_scheduler,
)
from src.models.targets import SR_MODULE
from src.utils.errors import UserError

# Lightning warns that a checkpoint taken every N steps under manual optimisation holds the
# weights after that step's update; that is what it holds under automatic optimisation too, and
# what an exact resume needs.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

# Keys of a GANModule config that an SRModule does not take.
GAN_KEYS = (
    "discriminator",
    "gan_loss",
    "gan_weight",
    "d_optimizer",
    "d_scheduler",
    "clip_grad_norm",
    "d_clip_grad_norm",
    "gp_weight",
    "artifact_weight",
    "artifact_window",
    "clean_weight",
)


def generator_config(config: dict[str, Any]) -> dict[str, Any]:
    """An SRModule config for a GANModule config's generator: what eval, predict and export
    rebuild from a GAN checkpoint (no critic, no perceptual network to fetch)."""
    plain = {key: value for key, value in config.items() if key not in GAN_KEYS}
    return {**plain, "_target_": SR_MODULE}


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


def as_frames(x: torch.Tensor) -> torch.Tensor:
    """A clip batch (N, T, C, H, W) as N x T images; images as they are."""
    return x.flatten(0, 1) if x.dim() == 5 else x


def gradient_penalty(
    discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor
) -> torch.Tensor:
    """WGAN-GP's penalty: (||grad D(x)|| - 1)^2 at random points between real and fake."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    scores = discriminator(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


class GANModule(SRModule):
    """An SRModule whose generator also learns to fool a discriminator.

    Its hyper-parameters (SRModule's and its own) are recorded by SRModule's constructor, which
    collects this constructor's arguments too; the critic, its loss and its optimiser and
    scheduler factories are described in :attr:`model_config` by how they were built.
    """

    BUILT_ARGUMENTS = (
        *SRModule.BUILT_ARGUMENTS,
        "discriminator",
        "gan_loss",
        "d_optimizer",
        "d_scheduler",
    )

    def __init__(
        self,
        net: nn.Module,
        scale: int,
        discriminator: nn.Module | None = None,
        gan_loss: GANLoss | None = None,
        gan_weight: float = 0.005,
        d_optimizer: OptimizerFactory | None = None,
        d_scheduler: SchedulerFactory | None = None,
        clip_grad_norm: float | None = None,
        d_clip_grad_norm: float | None = None,
        gp_weight: float = 10.0,
        artifact_weight: float = 0.0,
        artifact_window: int = 7,
        clean_weight: float = 0.0,
        **sr_options: Any,
    ):
        super().__init__(net, scale, **sr_options)
        if clean_weight < 0:
            raise UserError(f"model.clean_weight must be at least 0, got {clean_weight}")
        if clean_weight and not callable(getattr(net, "forward_with_cleaned", None)):
            raise UserError(
                f"model.clean_weight={clean_weight}: {type(net).__name__} has no cleaning stage "
                "(forward_with_cleaned, as RealBasicVSR's); set it to 0"
            )
        self.clean_weight = float(clean_weight)
        self.automatic_optimization = False
        self.discriminator = discriminator
        self.gan_loss = gan_loss or GANLoss("vanilla")
        self.gan_weight = gan_weight
        self.d_optimizer_factory = d_optimizer
        self.d_scheduler_factory = d_scheduler
        self.clip_grad_norm = clip_grad_norm
        self.d_clip_grad_norm = d_clip_grad_norm
        self.gp_weight = gp_weight
        # artifact_weight, artifact_window and the EMA they need are checked by the schema.
        self.artifact_loss = ArtifactLoss(artifact_window) if artifact_weight else None
        self.artifact_weight = float(artifact_weight)

    def built_parts(self) -> dict[str, Any]:
        return {
            **super().built_parts(),
            "discriminator": self.discriminator,
            "gan_loss": self.gan_loss,
            "d_optimizer": self.d_optimizer_factory,
            "d_scheduler": self.d_scheduler_factory,
        }

    def on_fit_start(self) -> None:
        if "16-mixed" in str(self.trainer.precision) and "bf16" not in str(self.trainer.precision):
            raise UserError(
                "trainer.precision=16-mixed does not work for GAN training here (the "
                "discriminator's direct optimiser step bypasses its gradient scaler); use "
                "bf16-mixed or 32"
            )

    def configure_optimizers(self) -> Any:
        g_params: Any = self.parameter_groups() if self.lr_multipliers else self.net.parameters()
        g_opt = build_optimizer(self.optimizer_factory, g_params, "model.optimizer")
        parts = [(self.scheduler_factory, g_opt, "model.scheduler")]
        optimizers = [g_opt]
        if self.discriminator is not None:
            d_params = self.discriminator.parameters()
            d_opt = build_optimizer(self.d_optimizer_factory, d_params, "model.d_optimizer")
            optimizers.append(d_opt)
            parts.append((self.d_scheduler_factory, d_opt, "model.d_scheduler"))
        schedulers = [
            build_scheduler(factory, optimizer, key)
            for factory, optimizer, key in parts
            if factory is not None
        ]
        return (optimizers, schedulers) if schedulers else optimizers

    def _optimizers(self) -> list[Any]:
        """The generator's optimiser, then the critic's when there is a critic."""
        optimizers = self.optimizers()
        return list(optimizers) if isinstance(optimizers, list) else [optimizers]

    def _clip(self, optimizer: Any, norm: float | None) -> None:
        if norm is not None:
            self.clip_gradients(optimizer, gradient_clip_val=norm, gradient_clip_algorithm="norm")

    def _finite_or_skip(self, loss: torch.Tensor) -> bool:
        if torch.isfinite(loss):
            return True
        self._on_nonfinite_loss(loss)  # raises unless model.nonfinite_loss=skip
        return False

    def _generator_step(
        self, lr: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor | None:
        """``target`` is what the content losses compare with (the sharpened HR under
        ``data.sharpen_target``); ``real`` is what the critic sees as real (the plain HR).
        Returns SR as frames (detached) for the critic's step."""
        g_opt = self._optimizers()[0]
        sr, cleaned = self._generate(lr)
        frames, target_frames = as_frames(sr), as_frames(target)
        g_loss = content = self.loss(frames, target_frames)
        terms = {"train/g_content": content}
        if self.discriminator is not None:
            terms["train/g_adversarial"] = self._adversarial(frames, as_frames(real))
            g_loss = g_loss + self.gan_weight * terms["train/g_adversarial"]
        if cleaned is not None:
            # mmagic's target: the pixel loss's, resized by 1 / scale with "area".
            clean_target = F.avg_pool2d(target_frames, self.scale)
            terms["train/loss_clean"] = F.l1_loss(as_frames(cleaned), clean_target)
            g_loss = g_loss + self.clean_weight * terms["train/loss_clean"]
        if self.artifact_loss is not None:
            ema_frames = as_frames(self._ema_sr(lr))
            terms["train/g_artifact"] = self.artifact_loss(frames, target_frames, ema_frames)
            g_loss = g_loss + self.artifact_weight * terms["train/g_artifact"]
        if not self._finite_or_skip(g_loss):
            return None
        g_opt.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self._clip(g_opt, self.clip_grad_norm)
        g_opt.step()
        self.update_ema()
        self.log("train/loss", g_loss, prog_bar=True, on_step=True, on_epoch=False)
        for name, value in terms.items():
            self.log(name, value, on_step=True, on_epoch=False)
        self.log_loss_terms(self.loss)
        return frames.detach()

    def _generate(self, lr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """SR of ``lr`` and, under ``clean_weight``, the network's cleaned LR (in [0, 1])."""
        if not self.clean_weight:
            return self.run_net(lr, self.training_net()), None
        scale = self.value_range
        sr, cleaned = self.net.forward_with_cleaned(lr * scale)  # type: ignore[operator]
        return sr / scale, cleaned / scale

    def _adversarial(self, frames: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """The generator's adversarial loss on SR ``frames``, the critic frozen."""
        assert self.discriminator is not None
        set_requires_grad(self.discriminator, False)
        fake_logits = self.discriminator(frames)
        # Only the relativistic loss compares with real images; the others ignore the argument.
        real_logits = self.discriminator(real) if self.gan_loss.kind == "ragan" else fake_logits
        return self.gan_loss.generator(real_logits.detach(), fake_logits)

    def _ema_sr(self, lr: torch.Tensor) -> torch.Tensor:
        """The EMA generator's SR of ``lr`` (before this step's update), without gradient."""
        assert self.ema is not None
        with torch.no_grad():
            return self.run_net(lr, self.ema.module)

    def _discriminator_step(self, sr: torch.Tensor, hr: torch.Tensor) -> None:
        assert self.discriminator is not None
        d_opt = self._optimizers()[1]
        set_requires_grad(self.discriminator, True)
        real_logits = self.discriminator(hr)
        fake_logits = self.discriminator(sr)
        d_loss = self.gan_loss.discriminator(real_logits, fake_logits)
        if self.gan_loss.kind == "wgan" and self.gp_weight:
            d_loss = d_loss + self.gp_weight * gradient_penalty(self.discriminator, hr, sr)
        if not self._finite_or_skip(d_loss):
            return
        d_opt.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self._clip(d_opt, self.d_clip_grad_norm)
        # The wrapped optimiser, stepped directly: Lightning counts steps of the optimisers it
        # steps, and trainer.max_steps is meant as generator steps.
        d_opt.optimizer.step()
        self.log("train/d_loss", d_loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log("train/d_real", real_logits.detach().mean(), on_step=True, on_epoch=False)
        self.log("train/d_fake", fake_logits.detach().mean(), on_step=True, on_epoch=False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        batch = self.augmented(batch)  # model.augment: one draw for HR and the plain HR
        # Real-ESRGAN sharpens the target of the pixel and perceptual losses only.
        lr, target = self.training_pair(batch)
        _, real = self.training_pair({**batch, "hr": batch.get("hr_plain", batch["hr"])})
        sr = self._generator_step(lr, target, real)
        if sr is not None and self.discriminator is not None:
            self._discriminator_step(sr, as_frames(real))
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
            if scheduler is not None:
                scheduler.step()
