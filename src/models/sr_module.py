"""SRModule: the LightningModule around any SR network.

It owns the loss, the optimiser and scheduler (built from Hydra partials), the one inference path
(:func:`src.ops.inference.upscale`, shared with eval and predict) and the paper-convention metrics.
Validation scores every image once and logs, per set and overall:
``val/psnr_y``, ``val/ssim_y``, ``val/psnr_rgb``, ``val/ssim_rgb``, ``val/<Set>/<metric>`` and
``val/psnr_y_best``.

The module records its own config: its settings as Lightning hyper-parameters
(``save_hyperparameters``) and, for the objects it is given (network, losses, optimiser and
scheduler factories), how they were built (:mod:`src.utils.construction`). :attr:`model_config`
puts the two together into the Hydra config that rebuilds it, and every checkpoint carries it, so
a module built in Python and trained by a plain Lightning Trainer loads in ``src.eval`` as one
trained by ``src.train`` does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, cast

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MaxMetric, MeanMetric

from src.archs.base import frames_of, size_multiple_of, traits_of
from src.archs.reparam import fuse_network, is_fusable
from src.io.tensors import PretrainedWeightsError
from src.metrics.paper import Gray, batch_peak, convention, score_batch
from src.metrics.registry import DEFAULT_METRICS, build_clip_metrics, build_metrics, columns_of
from src.models.distillation import (
    Distillation,
    Teacher,
    TeacherSpec,
    build_distillation,
    capture_features,
    distillation_spec,
)
from src.models.losses import prepare_weights, torch_loss_arguments
from src.models.optimizers import (
    adaptive_step_sizes,
    check_combinations,
    eval_weights,
    start_training,
    stop_training,
    store_eval_weights,
)
from src.models.targets import allowed_targets, config_aliases, targets_in
from src.ops.batch_augment import AugmentSettings, augment_batch, parse_settings
from src.ops.inference import DEFAULT_TILE_MEMORY_MB, Tile, call_padded, upscale
from src.ops.video_inference import ClipInference, stream_upscale, upscale_clip
from src.utils.choices import SINGLE, WINDOW
from src.utils.construction import NotDescribable, construction_config, target_name
from src.utils.errors import UserError
from src.utils.precision import inference_precision

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
OVERALL = "all"
# Constructor arguments about a run rather than the model: the names of its validation sets and
# how it scores (metrics, where their weight files live, the border crop). They are left out of
# model_config: each command that scores passes its own.
RUN_ARGUMENTS = ("val_set_names", "metrics", "metric_weights", "metric_cache", "crop_border")


class NonFiniteLossError(UserError, FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


def ema_copy(net: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``net``'s weights (``decay`` per optimiser step), or
    None. The EMA is validated, checkpointed beside the raw weights, and used by eval, predict
    and export."""
    if decay is None:
        return None
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def build_optimizer(
    factory: OptimizerFactory | None, params: Iterable[nn.Parameter], key: str
) -> torch.optim.Optimizer:
    """The optimiser of ``params`` from its Hydra partial; torch's refusals name ``key``."""
    if factory is None:
        raise UserError(f"{key} is not set: training needs an optimizer config")
    try:
        return factory(params=params)
    except (ValueError, TypeError) as error:  # torch's own check of the settings
        raise UserError(f"{key}: {error}") from error


def build_scheduler(
    factory: SchedulerFactory, optimizer: torch.optim.Optimizer, key: str
) -> torch.optim.lr_scheduler.LRScheduler:
    try:
        return factory(optimizer=optimizer)
    except (ValueError, TypeError) as error:
        raise UserError(f"{key}: {error}") from error


def import_pretrained(net: nn.Module, source: str, fused: bool) -> str | None:
    """Import ``model.pretrained`` into the network as built; with ``fused``, a file that does
    not fit it is returned, to import into the fused form (None: imported)."""
    from src.models.pretrained import import_weights

    try:
        import_weights(net, source)
    except PretrainedWeightsError:
        if not fused:
            raise
        return source
    return None


def import_fused_weights(net: nn.Module, source: str) -> None:
    """Import a ``model.pretrained`` file that did not fit the training form into the fused one."""
    from src.models.pretrained import import_weights

    try:
        import_weights(net, source)
    except PretrainedWeightsError as error:
        raise PretrainedWeightsError(
            f"model.pretrained={source} fits neither the training form of "
            f"{type(net).__name__} nor its fused form (model.fused=true): {error}"
        ) from error


def plain_value(value: Any) -> Any:
    """An OmegaConf container (what Hydra passes for a list or mapping) as plain data, so that a
    checkpoint's hyper-parameters load with ``weights_only=True``."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


class SRModule(pl.LightningModule):
    """Train and score ``net``, a plain nn.Module mapping [0, 1] LR to [0, 1] SR.

    ``value_range``: the pixel range the network works in (255.0: it sees 0..255); None, the
    default, takes what the network declares (:func:`src.archs.base.traits_of`), 1.0 for a
    network without a declaration.
    """

    # The constructor arguments that are objects (the network, the loss, optimiser and scheduler
    # factories): not hyper-parameters; model_config describes each by how it was built.
    BUILT_ARGUMENTS: ClassVar[tuple[str, ...]] = ("net", "loss", "optimizer", "scheduler")

    def __init__(
        self,
        net: nn.Module,
        scale: int,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        value_range: float | None = None,
        pretrained: str | None = None,
        tile: Tile = None,
        tile_overlap: int = 16,
        self_ensemble: bool = False,
        channels_last: bool = False,
        gray: Gray = "expand",
        ema_decay: float | None = None,
        nonfinite_loss: str = "stop",
        compile: bool = False,
        val_set_names: list[str] | None = None,
        tile_memory_mb: float = DEFAULT_TILE_MEMORY_MB,
        metrics: Sequence[str] = DEFAULT_METRICS,
        metric_weights: str = "download",
        metric_cache: str = ".cache/weights",
        crop_border: int | None = None,
        clip_length: int | None = None,
        clip_overlap: int = 2,
        window_padding: str = "reflection_circle",
        lr_multipliers: dict[str, float] | None = None,
        freeze_steps: dict[str, int] | None = None,
        pretrained_parts: dict[str, str | None] | None = None,
        fused: bool = False,
        pruning: dict[str, Any] | None = None,
        teacher: dict[str, Any] | None = None,
        augment: dict[str, Any] | None = None,
    ):
        super().__init__()
        # Every argument of this constructor and of a subclass's (GANModule's), but the objects.
        self.save_hyperparameters(ignore=list(self.BUILT_ARGUMENTS), logger=False)
        self.net = net
        self.scale = scale
        self.loss = loss or nn.L1Loss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        traits = traits_of(net)
        if value_range is None:
            value_range = traits.value_range if traits is not None else 1.0
        self.value_range = float(value_range)
        self.hparams.update({key: plain_value(value) for key, value in self.hparams.items()})
        self.hparams["value_range"] = self.value_range  # the resolved value, not None
        self._warned_config = False
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.tile_memory_mb = tile_memory_mb
        self.self_ensemble = self_ensemble
        self.clip_length = clip_length
        self.clip_overlap = clip_overlap
        self.window_padding = window_padding
        self.lr_multipliers = dict(lr_multipliers or {})
        self.freeze_steps = dict(freeze_steps or {})
        self.channels_last = channels_last
        # What forward and stream run the network in: fp32 (scoring, always), or bf16, which only
        # src.predict sets (its precision option); not a hyper-parameter of the model.
        self.precision = "fp32"
        self.compile_training = compile
        self._compiled_net: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.nonfinite_loss = nonfinite_loss
        self.skipped_batches = 0
        self.gray = gray
        # Pixels cropped from each border before scoring; None: the scale (the papers' rule).
        self.crop_border = crop_border
        if channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.val_scores: list[dict[str, Any]] = []
        # The border each validation set was scored with (the scale, or its protocol's).
        self.val_borders: dict[str, int] = {}
        self.extra_metrics = build_metrics(list(metrics), metric_weights, metric_cache)
        self.clip_metrics = build_clip_metrics(list(metrics), metric_weights, metric_cache)
        self.metric_columns = columns_of([*self.extra_metrics, *self.clip_metrics])
        self.metrics = nn.ModuleDict()
        self.best_psnr_y = MaxMetric().set_dtype(torch.float64)
        self._register_metrics(val_set_names or [])
        # With ``fused``, a file of the fused form is imported once the network is fused.
        fused_weights = import_pretrained(self.net, pretrained, fused) if pretrained else None
        for prefix, path in (pretrained_parts or {}).items():
            from src.models.pretrained import import_part

            if path is not None:  # null: a recipe's slot left empty
                import_part(self.net, prefix, path)
        if fused:
            self.net = self.fused_copy(self.net)
            if fused_weights is not None:
                import_fused_weights(self.net, fused_weights)
        if pruning is not None:  # src.prune's record: the channels it removed (no code)
            self.replay_pruning(plain_value(pruning))
        # model.teacher (src/models/distillation.py), checked here; the teacher is loaded and
        # given to distil_from by src/models/teachers.py before fitting.
        self.teacher_spec: TeacherSpec | None = distillation_spec(teacher, self.net, compile)
        self.distillation: Distillation | None = None
        self.ema = ema_copy(self.net, ema_decay)
        # model.augment (conf/augment): batch augmentations of training batches only.
        self.batch_augment: AugmentSettings | None = (
            parse_settings(plain_value(augment)) if augment is not None else None
        )

    def _register_metrics(self, val_set_names: list[str]) -> None:
        """Metric states for the overall score and each validation set, made up front so that
        every rank (under DDP) holds the same ones."""
        self._configured_groups = {OVERALL, *(n.replace(".", "_") for n in val_set_names)}
        for set_name in [OVERALL, *val_set_names]:
            self._metrics_for(set_name)

    # --- the network and the shared inference path -------------------------------------------
    @property
    def inference_net(self) -> nn.Module:
        """The weights inference uses: the EMA copy when there is one, else the raw network."""
        return self.ema.module if self.ema is not None else self.net

    def run_net(
        self, lr: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> torch.Tensor:
        """One network call on [0, 1] input; networks trained on 0..255 see 0..255, and
        networks that need a size multiple get their input padded to it."""
        net = self.net if net is None else net
        if self.channels_last and lr.dim() == 4:
            lr = lr.contiguous(memory_format=torch.channels_last)
        multiple = size_multiple_of(self.net)
        if self.value_range == 1.0:
            return call_padded(net, lr, multiple, self.scale)
        return call_padded(net, lr * self.value_range, multiple, self.scale) / self.value_range

    @property
    def border(self) -> int:
        """Pixels cropped from each border of SR and HR before scoring."""
        return self.scale if self.crop_border is None else self.crop_border

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch the way validation, eval and predict all do: float32 input,
        autocast off, whatever precision training uses (the weights are float32 under every
        precision training accepts: 32 and the mixed ones). Only src.predict's ``precision=bf16``
        (:attr:`precision`) runs it under bf16 autocast instead; the output is float32 either way.

        ``lr`` is a batch of images (N, C, h, w) or of clips (N, T, C, h, w); a video network
        given images sees each as a clip of one frame."""
        net = self.inference_net
        with inference_precision(lr.device, self.precision):
            if lr.dim() == 5:
                return self._upscale_clip(net, lr.float()).float()
            if self.is_video_network:
                return self._upscale_clip(net, lr.float().unsqueeze(1)).squeeze(1).float()
            return self._upscale(net, lr.float()).float()

    @property
    def is_video_network(self) -> bool:
        return frames_of(self.net)[0] != SINGLE

    def clip_inference(self) -> ClipInference:
        """How clips are run: the network's declared use of time and the inference options."""
        kind, window, position = frames_of(self.net)
        return ClipInference(
            frames=kind,
            window=window,
            window_position=position,
            padding=self.window_padding,
            clip_length=self.clip_length,
            clip_overlap=self.clip_overlap,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
            self_ensemble=self.self_ensemble,
            tile_memory_mb=self.tile_memory_mb,
            min_frames=int(getattr(self.net, "min_frames", 1)),
            # An ONNX file's fixed clip length (src.models.onnx_runtime.OnnxGraph).
            fixed_frames=getattr(self.net, "fixed_frames", None),
        )

    def stream(self, frames: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Super-resolve frames (N, C, h, w) as they come, as one clip, in the chunks
        ``clip_length`` and ``clip_overlap`` set (:func:`src.ops.video_inference.stream_upscale`):
        memory stays bounded on a film. Each step runs as :meth:`forward` does (fp32, autocast
        off) and without gradients; those settings do not outlive a step into the caller."""
        net = self.inference_net
        outputs = stream_upscale(
            (frame.float() for frame in frames),
            lambda x: self.run_net(x, net),
            self.scale,
            self.clip_inference(),
        )
        while True:
            with torch.no_grad(), inference_precision(self.device, self.precision):
                out = next(outputs, None)
            if out is None:
                return
            yield out.float()

    def _upscale_clip(self, net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
        return upscale_clip(lambda x: self.run_net(x, net), lr, self.scale, self.clip_inference())

    def _upscale(self, net: nn.Module, lr: torch.Tensor) -> torch.Tensor:
        return upscale(
            lambda x: self.run_net(x, net),
            lr,
            self.scale,
            tile=self.tile,
            tile_overlap=self.tile_overlap,
            self_ensemble=self.self_ensemble,
            tile_memory_mb=self.tile_memory_mb,
        )

    def fused_copy(self, net: nn.Module) -> nn.Module:
        """``net`` with its re-parameterisable blocks fused (:mod:`src.archs.reparam`), in this
        module's memory layout."""
        if not is_fusable(net):
            raise UserError(
                f"model.fused=true: {type(net).__name__} has no re-parameterisable block to fuse "
                "(none defines fuse()); set model.fused=false"
            )
        fused = fuse_network(net)
        if self.channels_last:
            fused.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return fused

    def replay_pruning(self, record: dict[str, Any]) -> None:
        """Cut the freshly built network to the shapes ``record`` describes
        (:func:`src.models.pruning.replay`), so that a pruned checkpoint's weights load."""
        from src.models.pruning import replay

        replay(self.net, record)
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def fuse_for_inference(self) -> bool:
        """Replace the network and its EMA copy by their fused forms, as ``model.fused=true``
        builds them (what eval, predict and export run); False, and nothing done, where there
        is nothing to fuse (or it is fused already)."""
        if not is_fusable(self.net):
            return False
        self.net = self.fused_copy(self.net)
        if self.ema is not None:
            self.ema.module = self.fused_copy(self.ema.module)
        self._compiled_net = None
        self.hparams["fused"] = True  # the config that rebuilds this module builds it fused
        return True

    @property
    def has_trainable_parameters(self) -> bool:
        return any(p.requires_grad for p in self.net.parameters())

    # --- training ----------------------------------------------------------------------------
    def training_net(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network the training step calls: ``torch.compile``'d when ``compile`` is on.

        The compiled wrapper is kept outside the module's children, so checkpoints hold the plain
        network's keys and load without compilation.
        """
        if not self.compile_training:
            return self.net
        if self._compiled_net is None:
            object.__setattr__(self, "_compiled_net", torch.compile(self.net))
        assert self._compiled_net is not None
        return self._compiled_net

    def training_pair(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch's LR and target as the network takes them: a clip batch's frames
        as images for an image network, its centre frame as the target of a window network."""
        lr, hr = batch["lr"], batch["hr"]
        kind, _, position = frames_of(self.net)
        if lr.dim() == 4 and kind != SINGLE:
            raise UserError(
                f"{type(self.net).__name__} is a video network: train it on clips "
                "(data=reds, vimeo90k, clip_folder or synthetic_clips)"
            )
        if lr.dim() == 5 and kind == SINGLE:
            return lr.flatten(0, 1), hr.flatten(0, 1)
        if kind == WINDOW:
            return lr, hr[:, position]
        return lr, hr

    def augmented(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The training batch under ``model.augment`` (:mod:`src.ops.batch_augment`), drawn from
        the run's seed, this step and this rank: a resumed run draws as an uninterrupted one."""
        if self.batch_augment is None:
            return batch
        return augment_batch(self.batch_augment, batch, self.global_step, self.global_rank)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        lr, hr = self.training_pair(self.augmented(batch))
        layers = self.distillation.student_layers if self.distillation is not None else []
        with capture_features(self.net, layers) as student_features:
            sr = self.run_net(lr, self.training_net())
        loss = self.loss(sr, hr)
        if self.distillation is not None:  # the teacher runs once, for all its terms
            loss = loss + self.distillation(lr, sr, student_features)
            self.log_loss_terms(self.distillation)
        if not torch.isfinite(loss):
            self._on_nonfinite_loss(loss)
            return None  # Lightning skips the optimiser step for this batch
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log_loss_terms(self.loss)
        return loss

    def _on_nonfinite_loss(self, loss: torch.Tensor) -> None:
        """Stop with a message naming the step, or skip the batch (``nonfinite_loss=skip``)."""
        step = self.global_step
        if self.nonfinite_loss == "stop":
            raise NonFiniteLossError(
                f"the training loss is {loss.item()} at step {step}; stopping instead of "
                "training on. Lower model.optimizer.lr, set trainer.gradient_clip_val, or use "
                "model.nonfinite_loss=skip to skip such batches"
            )
        self.skipped_batches += 1
        warnings.warn(f"non-finite loss at step {step}: batch skipped", stacklevel=2)

    def distil_from(self, teacher: Teacher) -> Distillation:
        """Learn from ``teacher`` (loaded by :func:`src.models.teachers.attach_teacher`) as
        ``model.teacher`` says: its terms join the loss, its feature adapters these children."""
        if self.teacher_spec is None:
            raise UserError("model.teacher names no teacher: there is nothing to distil from")
        self.distillation = build_distillation(
            self.teacher_spec, teacher, self.net, self.value_range
        )
        return self.distillation

    def setup(self, stage: str) -> None:
        # Before the optimiser and a resumed state (which holds the adapters) are set up.
        if stage == "fit" and self.teacher_spec is not None and self.distillation is None:
            raise UserError(
                "model.teacher is set but no teacher was loaded: train with python -m src.train, "
                "or call src.models.teachers.attach_teacher(module) before trainer.fit"
            )

    def on_fit_start(self) -> None:
        if self.distillation is not None:  # the teacher is no child: it moves on its own
            self.distillation.teacher.to(self.device)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: checkpoint callbacks run before that hook, and a
        # checkpoint must hold the EMA of every step it has taken (exact resume).
        self.update_ema()

    def update_ema(self) -> None:
        """One step of the EMA, of the weights inference would use: a schedule-free
        optimiser's averaged x, not the y it trains at (src/models/optimizers.py)."""
        if self.ema is not None:
            with eval_weights(self.fit_optimizers()):
                self.ema.update_parameters(self.net)

    def fit_optimizers(self) -> list[torch.optim.Optimizer]:
        """The torch optimisers of the fit this module is in; none outside one."""
        try:
            trainer = self.trainer
        except RuntimeError:  # Lightning's answer for a module attached to no Trainer
            return []
        return list(trainer.optimizers)

    # Schedule-free optimisers train at y and are validated and saved at x; Prodigy's step.
    def on_train_start(self) -> None:
        start_training(self.fit_optimizers())
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        check_combinations(self.fit_optimizers(), schedulers, self.net)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for key, size in adaptive_step_sizes(self.fit_optimizers()).items():
            self.log(key, size, on_step=True, on_epoch=False)

    def on_train_end(self) -> None:
        stop_training(self.fit_optimizers())  # the module keeps x after fit

    def on_validation_start(self) -> None:
        stop_training(self.fit_optimizers())

    def on_validation_end(self) -> None:
        # After the callbacks' on_validation_end, where checkpoints are written in eval mode.
        if self.trainer.state.fn == "fit":
            start_training(self.fit_optimizers())

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The network's parameters, one group per ``lr_multipliers`` prefix (with its scaled
        learning rate) and one for the rest, in the network's parameter order."""
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr")
        named = list(self.net.named_parameters())
        groups: list[dict[str, Any]] = []
        taken: set[str] = set()
        for prefix, multiplier in self.lr_multipliers.items():
            chosen = [(n, p) for n, p in named if n.startswith(f"{prefix}.") and n not in taken]
            if not chosen:
                raise UserError(f"model.lr_multipliers.{prefix}: no network parameter is named so")
            if base_lr is None:
                raise UserError("model.lr_multipliers needs model.optimizer.lr to scale")
            taken.update(n for n, _ in chosen)
            groups.append({"params": [p for _, p in chosen], "lr": base_lr * multiplier})
        rest = [p for n, p in named if n not in taken]
        return [{"params": rest}, *groups] if groups else [{"params": rest}]

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters frozen at the current step by ``freeze_steps``."""
        frozen = []
        for prefix, steps in self.freeze_steps.items():
            chosen = [p for n, p in self.net.named_parameters() if n.startswith(f"{prefix}.")]
            if not chosen:
                raise UserError(f"model.freeze_steps.{prefix}: no network parameter is named so")
            if self.global_step < steps:
                frozen.extend(chosen)
        return frozen

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # No gradient, no update (torch's optimisers skip parameters without one); a function
        # of the step alone, so a resumed run freezes the same steps.
        for parameter in self.frozen_parameters():
            parameter.grad = None

    def configure_optimizers(self) -> Any:
        params: Any = self.parameter_groups() if self.lr_multipliers else self.net.parameters()
        if self.distillation is not None:  # the feature adapters learn with the network
            params = self.distillation.parameter_groups(params)
        optimizer = build_optimizer(self.optimizer_factory, params, "model.optimizer")
        if self.scheduler_factory is None:
            return optimizer
        scheduler = build_scheduler(self.scheduler_factory, optimizer, "model.scheduler")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def prepare_data(self) -> None:
        """Fetch the weight files losses and metrics need (VGG, LPIPS), once per node."""
        prepare_weights(self)
        for metric in self.extra_metrics:
            metric.prepare()
        for clip_metric in self.clip_metrics:
            clip_metric.prepare()

    def log_loss_terms(self, loss: nn.Module, prefix: str = "train/loss_") -> None:
        """Each term of a composite loss, as logged values (``train/loss_pixel``, ...)."""
        for name, value in getattr(loss, "last", {}).items():
            self.log(f"{prefix}{name}", value, on_step=True, on_epoch=False)

    # --- validation --------------------------------------------------------------------------
    def _metrics_for(self, set_name: str) -> nn.ModuleDict:
        key = set_name.replace(".", "_")
        if key not in self.metrics:
            self.metrics[key] = nn.ModuleDict(
                {name: MeanMetric().set_dtype(torch.float64) for name in self.metric_columns}
            )
            self.metrics[key].to(self.device)
        group = self.metrics[key]
        assert isinstance(group, nn.ModuleDict)
        return group

    def on_validation_epoch_start(self) -> None:
        self.val_scores = []
        self.val_borders = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if "lr" not in batch:
            return None  # an unreadable image the data module skipped
        if batch["lr"].dim() == 5:
            return self._validate_clips(batch)
        sr = self(batch["lr"]).clamp(0.0, 1.0)
        raw_gray = batch.get("gray") if self.gray == "raw" else None
        peak = batch_peak(batch)
        scores = score_batch(sr, batch["hr"], border=self.border, raw_gray=raw_gray, peak=peak)
        scoring = convention(int(peak).bit_length(), sr.shape[1])
        extra: dict[str, list[float]] = {}
        for metric in self.extra_metrics:
            extra.update(metric(sr, batch["hr"], self.border))
        for i, image_scores in enumerate(scores):
            set_name = batch["set"][i]
            self.val_borders[set_name] = self.border
            values = {**image_scores.as_dict(), **{k: v[i] for k, v in extra.items()}}
            for group in (self._metrics_for(OVERALL), self._metrics_for(set_name)):
                for name, value in values.items():
                    cast(MeanMetric, group[name]).update(torch.tensor(value, dtype=torch.float64))
            record = {"set": set_name, "name": batch["name"][i], **values, "scoring": scoring}
            if "index" in batch:
                record["index"] = int(batch["index"][i])
            self.val_scores.append(record)
        return {"sr": sr, "scores": scores}

    def _validate_clips(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Score each frame of each clip. The per-set means weigh every frame by one over its
        clip's length: the mean per clip, then across clips, as the video papers average (Vid4,
        REDS4); per-frame rows go to ``val_scores`` with their clip's name."""
        sr = self(batch["lr"]).clamp(0.0, 1.0)
        border = self.border
        if self.crop_border is None and "crop_border" in batch:
            border = int(batch["crop_border"][0])  # the set's protocol (no crop on video sets)
        peak = batch_peak(batch)
        all_scores = []
        for i in range(sr.shape[0]):
            frames_sr, frames_hr = sr[i], batch["hr"][i]
            scores = score_batch(frames_sr, frames_hr, border=border, peak=peak)
            all_scores.append(scores)
            scoring = convention(int(peak).bit_length(), frames_sr.shape[1])
            extra: dict[str, list[float]] = {}
            for metric in self.extra_metrics:
                extra.update(metric(frames_sr, frames_hr, border))
            pairs: dict[str, dict[int, float]] = {}
            for clip_metric in self.clip_metrics:
                pairs.update(clip_metric(frames_sr, frames_hr))
            set_name, clip = batch["set"][i], batch["name"][i]
            self.val_borders[set_name] = border
            # Each value weighs one over the count of its kind in the clip: per clip, then
            # across clips.
            weights = {name: 1.0 / len(scores) for name in self.metric_columns}
            weights.update({name: 1.0 / max(len(values), 1) for name, values in pairs.items()})
            for t, frame_scores in enumerate(scores):
                values = {**frame_scores.as_dict(), **{k: v[t] for k, v in extra.items()}}
                values.update({k: v[t] for k, v in pairs.items() if t in v})
                for group in (self._metrics_for(OVERALL), self._metrics_for(set_name)):
                    for name, value in values.items():
                        cast(MeanMetric, group[name]).update(
                            torch.tensor(value, dtype=torch.float64),
                            torch.tensor(weights[name], dtype=torch.float64),
                        )
                frame = str(batch["frames"][t][i]) if "frames" in batch else f"{t:08d}"
                record = {
                    "set": set_name,
                    "name": f"{clip}/{frame}",
                    "clip": clip,
                    "frame": frame,
                    **values,
                    "scoring": scoring,
                }
                if "index" in batch:
                    record["index"] = int(batch["index"][i])
                self.val_scores.append(record)
        return {"sr": sr, "scores": all_scores}

    def _gather_val_scores(self) -> None:
        """Every rank's per-image scores on every rank (DDP), in validation-list order."""
        scores = self.val_scores
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            shares: list[list[dict[str, Any]]] = [[] for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(shares, scores)
            scores = [record for share in shares for record in share]
        scores.sort(key=lambda record: record.get("index", 0))
        self.val_scores = [{k: v for k, v in r.items() if k != "index"} for r in scores]

    def on_validation_epoch_end(self) -> None:
        self._gather_val_scores()
        logged: dict[str, torch.Tensor] = {}
        for key, group in self.metrics.items():
            assert isinstance(group, nn.ModuleDict)
            metrics = {name: cast(MeanMetric, metric) for name, metric in group.items()}
            # Configured sets are computed on every rank (compute() synchronises across ranks,
            # so all must call it); a set met only on the way, in single-process use, only
            # when it was seen.
            if key not in self._configured_groups and not metrics["psnr_y"].update_count:
                continue
            prefix = "val" if key == OVERALL else f"val/{key}"
            for name, metric in metrics.items():
                if not metric.update_count and name != "psnr_y":
                    continue  # a clip metric on image sets: no value, nothing to log
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torchmetrics warns about empty states
                    logged[f"{prefix}/{name}"] = metric.compute()
                metric.reset()
        if not logged or self.trainer.sanity_checking:
            return
        self.best_psnr_y.update(logged["val/psnr_y"])
        logged["val/psnr_y_best"] = self.best_psnr_y.compute()
        self.log("val/psnr_y", logged.pop("val/psnr_y"), prog_bar=True)
        self.log_dict(logged)

    # --- its own config and checkpoints -------------------------------------------------------
    def built_parts(self) -> dict[str, Any]:
        """The objects given for :attr:`BUILT_ARGUMENTS`, as this module holds them."""
        return {
            "net": self.net,
            "loss": self.loss,
            "optimizer": self.optimizer_factory,
            "scheduler": self.scheduler_factory,
        }

    def describe(self) -> tuple[dict[str, Any] | None, str]:
        """:attr:`model_config`, or None and which part records no construction."""
        settings = {k: v for k, v in self.hparams.items() if k not in RUN_ARGUMENTS}
        parts = {"hyper-parameters": settings, **self.built_parts()}
        described: dict[str, Any] = {}
        for name, part in parts.items():
            try:
                described[name] = construction_config(part, config_aliases(), torch_loss_arguments)
            except NotDescribable as error:
                return None, f"model.{name}: {error}"
        settings = described.pop("hyper-parameters")
        return {"_target_": target_name(type(self)), **settings, **described}, ""

    @property
    def model_config(self) -> dict[str, Any] | None:
        """The Hydra config that rebuilds this module: ``_target_`` its class, its own
        hyper-parameters (without :data:`RUN_ARGUMENTS`; ``value_range`` resolved) and the
        config of each object it was given. None when one of those records no construction (a
        network from outside SR Lab)."""
        return self.describe()[0]

    def stored_config(self) -> dict[str, Any] | None:
        """:attr:`model_config` where ``src.eval`` can rebuild the module from it, else None with
        a warning (once) that loading will need the network named."""
        config, problem = self.describe()
        if config is not None:
            foreign = sorted(set(targets_in(config)) - allowed_targets())
            if foreign:
                config = None
                problem = (
                    f"it names {', '.join(foreign)}, which SR Lab does not build from a "
                    "checkpoint (only what conf/ names)"
                )
        if config is None and not self._warned_config:
            self._warned_config = True
            rank_zero_warn(
                f"the checkpoint holds no model config ({problem}): src.eval, src.predict and "
                "src.export will need the network named to load it, model=<name> "
                "model.pretrained=<checkpoint>"
            )
        return config

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta: dict[str, Any] = {"scale": self.scale, "best_psnr_y": self._best_so_far()}
        config = self.stored_config()
        if config is not None:
            meta["model_config"] = config
        checkpoint["srlab"] = meta
        store_eval_weights(checkpoint, self, self.fit_optimizers())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # torchmetrics keeps metric states out of the state dict: without this a resumed run
        # would report (and sweeps optimise) the best of its validations after the resume only.
        best = (checkpoint.get("srlab") or {}).get("best_psnr_y")
        if best is not None:
            self.best_psnr_y.update(torch.tensor(float(best), dtype=torch.float64))

    def _best_so_far(self) -> float | None:
        """The best overall validation PSNR_Y so far, None before the first validation."""
        # The state itself, not compute(): every rank holds the same value (it is updated with
        # the synchronised mean), and compute() would synchronise again.
        best = float(cast(torch.Tensor, self.best_psnr_y.max_value))
        return best if math.isfinite(best) else None
