"""SRModule: the LightningModule around any SR network.

It owns the loss, the optimiser and scheduler (built from Hydra partials), the one inference path
(:func:`src.ops.inference.upscale`, shared with eval and predict) and the paper-convention metrics.
Validation scores every image once and logs, per set and overall:
``val/psnr_y``, ``val/ssim_y``, ``val/psnr_rgb``, ``val/ssim_rgb``, ``val/<Set>/<metric>`` and
``val/psnr_y_best``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MaxMetric, MeanMetric

from src.metrics.paper import Gray, batch_peak, convention, score_batch
from src.metrics.registry import DEFAULT_METRICS, build_metrics, columns_of
from src.models.losses import prepare_weights
from src.ops.inference import DEFAULT_TILE_MEMORY_MB, Tile, upscale
from src.utils.errors import UserError
from src.utils.precision import fp32_scoring

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]
OVERALL = "all"


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


class SRModule(pl.LightningModule):
    """Train and score ``net``, a plain nn.Module mapping [0, 1] LR to [0, 1] SR."""

    def __init__(
        self,
        net: nn.Module,
        scale: int,
        loss: nn.Module | None = None,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        value_range: float = 1.0,
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
    ):
        super().__init__()
        self.net = net
        self.scale = scale
        self.loss = loss or nn.L1Loss()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.value_range = value_range
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.tile_memory_mb = tile_memory_mb
        self.self_ensemble = self_ensemble
        self.channels_last = channels_last
        self.compile_training = compile
        self._compiled_net: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.nonfinite_loss = nonfinite_loss
        self.skipped_batches = 0
        self.gray = gray
        # Pixels cropped from each border before scoring; None: the scale (the papers' rule).
        self.crop_border = crop_border
        if channels_last:
            self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model_config: dict[str, Any] | None = None
        self.val_scores: list[dict[str, Any]] = []
        self.extra_metrics = build_metrics(list(metrics), metric_weights, metric_cache)
        self.metric_columns = columns_of(self.extra_metrics)
        self.metrics = nn.ModuleDict()
        self.best_psnr_y = MaxMetric().set_dtype(torch.float64)
        self._register_metrics(val_set_names or [])
        if pretrained:
            from src.models.pretrained import import_weights

            import_weights(self.net, pretrained)
        self.ema = ema_copy(self.net, ema_decay)

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
        """One network call on [0, 1] input; networks trained on 0..255 see 0..255."""
        net = self.net if net is None else net
        if self.channels_last:
            lr = lr.contiguous(memory_format=torch.channels_last)
        if self.value_range == 1.0:
            return net(lr)
        return net(lr * self.value_range) / self.value_range

    @property
    def border(self) -> int:
        """Pixels cropped from each border of SR and HR before scoring."""
        return self.scale if self.crop_border is None else self.crop_border

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        """Super-resolve a batch the way validation, eval and predict all do: float32 input,
        autocast off, whatever precision training uses (the weights are float32 under every
        precision training accepts: 32 and the mixed ones)."""
        net = self.inference_net
        with fp32_scoring(lr.device):
            return self._upscale(net, lr.float())

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

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        sr = self.run_net(batch["lr"], self.training_net())
        loss = self.loss(sr, batch["hr"])
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

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # Here, not in on_train_batch_end: checkpoint callbacks run before that hook, and a
        # checkpoint must hold the EMA of every step it has taken (exact resume).
        if self.ema is not None:
            self.ema.update_parameters(self.net)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(
            self.optimizer_factory, self.net.parameters(), "model.optimizer"
        )
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any] | None:
        if "lr" not in batch:
            return None  # an unreadable image the data module skipped
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
            values = {**image_scores.as_dict(), **{k: v[i] for k, v in extra.items()}}
            for group in (self._metrics_for(OVERALL), self._metrics_for(set_name)):
                for name, value in values.items():
                    cast(MeanMetric, group[name]).update(torch.tensor(value, dtype=torch.float64))
            record = {"set": set_name, "name": batch["name"][i], **values, "scoring": scoring}
            if "index" in batch:
                record["index"] = int(batch["index"][i])
            self.val_scores.append(record)
        return {"sr": sr, "scores": scores}

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

    # --- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta: dict[str, Any] = {"scale": self.scale, "best_psnr_y": self._best_so_far()}
        if self.model_config is not None:
            meta["model_config"] = self.model_config
        checkpoint["srlab"] = meta

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
