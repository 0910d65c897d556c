"""Training and data-loading throughput on this machine: ``make bench``.

Prints, with the thread count: the EDSR x2 training step (batch 16, LR patches 48) in fp32,
fp32 + channels-last, bf16 autocast + channels-last, and that compiled, as patches per second,
achieved GFLOP/s (convolution FLOPs counted analytically) and the ratio to this CPU's
matrix-multiply peak measured in the same run; then the data loader's patches per second at 0
and 2 workers (in memory, memory-mapped whole or cut, a random degradation per patch) against what
the bf16 step consumes. Medians of several timed repetitions after a warm-up.

    python -m bench.run [--steps 5] [--skip-loader] [--skip-compile]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.archs.edsr import EDSR

BATCH, PATCH, SCALE = 16, 48, 2


def median_seconds(run: Callable[[], None], repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``run`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(
    dtype: torch.dtype, sizes: tuple[int, ...] = (2048, 4096), repeats: int = 5
) -> float:
    """The practical peak of this CPU: the best GFLOP/s of square matrix multiplies of
    ``sizes`` (fastest of ``repeats`` timed calls each, after a warm-up)."""
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        torch.mm(a, b)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        best = max(best, 2 * size**3 / min(times) / 1e9)
    return best


def conv_training_flops(net: nn.Module, lr_shape: tuple[int, ...]) -> int:
    """FLOPs (2 x multiply-adds) of every Conv2d in one training step, from output shapes: the
    forward pass, the weight gradient where the weight is trained, and the input gradient where
    the input needs one (not for the first convolution, whose input is the data)."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        forward = 2 * output.numel() * kernel
        passes = 1 + int(module.weight.requires_grad) + int(inputs[0].requires_grad)
        total += forward * passes

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    net(torch.zeros(lr_shape))
    for hook in hooks:
        hook.remove()
    return total


def training_step(channels_last: bool, bf16: bool, compiled: bool = False) -> Callable[[], None]:
    """One EDSR optimiser step (forward, L1, backward, Adam) on random patches; ``compiled``
    wraps the network in ``torch.compile`` (compilation happens in the untimed warm-up)."""
    torch.manual_seed(0)
    net: nn.Module = EDSR(SCALE)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    if compiled:
        net = torch.compile(net)  # type: ignore[assignment]
    lr = torch.rand(BATCH, 3, PATCH, PATCH).contiguous(memory_format=memory)
    hr = torch.rand(BATCH, 3, PATCH * SCALE, PATCH * SCALE)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            sr = net(lr)
        loss = nn.functional.l1_loss(sr.float(), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


VARIANTS = (
    ("fp32", False, False, False),
    ("fp32 + channels-last", True, False, False),
    ("bf16 + channels-last", True, True, False),
    ("bf16 + CL, compiled", True, True, True),
)


def bench_training(repeats: int, compiled: bool = True) -> dict[str, float]:
    """Print the training-step table; return patches per second by variant."""
    flops = conv_training_flops(EDSR(SCALE), (BATCH, 3, PATCH, PATCH))
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(
        f"matmul peak (best of 2048 and 4096 square): fp32 {peaks['fp32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    print(
        f"EDSR x{SCALE} training step, batch {BATCH}, LR patch {PATCH}: "
        f"{flops / 1e9:.1f} GFLOP per step (convolutions, forward + backward)"
    )
    print(
        f"{'variant':<24}{'ms/step':>9}{'patches/s':>11}{'GFLOP/s':>9}{'of peak':>9}{'vs fp32':>9}"
    )
    rates: dict[str, float] = {}
    variants = [v for v in VARIANTS if compiled or not v[3]]
    for name, channels_last, bf16, is_compiled in variants:
        seconds = median_seconds(training_step(channels_last, bf16, is_compiled), repeats)
        achieved = flops / seconds / 1e9
        peak = peaks["bf16" if bf16 else "fp32"]
        rates[name] = BATCH / seconds
        print(
            f"{name:<24}{seconds * 1e3:>9.0f}{BATCH / seconds:>11.1f}{achieved:>9.0f}"
            f"{achieved / peak:>9.2f}{rates[name] / rates['fp32']:>8.2f}x"
        )
    return rates


LOADER_IMAGES = ["astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]


def write_sample_folder(folder: Path) -> Path:
    """The scikit-image sample photos as PNG files: a small folder-of-files training set."""
    from src.data.sources import SkimageImages
    from src.io.images import write_image

    for image in SkimageImages(names=LOADER_IMAGES).load():
        write_image(folder / f"{image.name}.png", image.pixels)
    return folder


def loader_module(
    folder: Path, workers: int, batches: int, cache: dict[str, Any], degradation: str
) -> Any:
    """The data module of one loader variant (not set up yet): training patches from the files
    in ``folder``, enough for ``batches`` timed batches after the start-up ones."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from src.data.datamodule import SRDataModule
    from src.data.sources import FolderImages, SkimageImages

    return SRDataModule(
        SCALE,
        [SkimageImages(names=["chelsea"], name="val")],
        FolderImages(root=str(folder), name="bench"),
        degradation=instantiate(OmegaConf.load(f"conf/degradation/{degradation}.yaml")),
        lr_patch_size=PATCH,
        batch_size=BATCH,
        num_workers=workers,
        num_patches=BATCH * (batches + 5),
        cache=cache,
    )


def bench_loader(datamodule: Any, batches: int) -> float:
    """Patches per second that a data module's training loader delivers, after start-up."""
    iterator = iter(datamodule.train_dataloader())
    for _ in range(5):  # start-up of workers is not throughput
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return BATCH * batches / (time.perf_counter() - start)


def bench_loaders(consumed: float, batches: int) -> None:
    """Print the loader table: patches/s per variant and worker count against the step's use."""
    print(f"{'loader variant':<40}{'workers':>8}{'patches/s':>11}{'x step':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = write_sample_folder(Path(scratch) / "images")
        subimages = {"on_disk": True, "dir": f"{scratch}/cache"}
        for name, cache, degradation in (
            ("in memory, bicubic LR", {}, "bicubic"),
            ("memory-mapped whole images, bicubic", {**subimages, "crop": None}, "bicubic"),
            ("memory-mapped 480 px sub-images, bicubic", subimages, "bicubic"),
            ("in memory, realistic degradation", {}, "realistic"),
        ):
            for workers in (0, 2):
                datamodule = loader_module(folder, workers, batches, cache, degradation)
                datamodule.prepare_data()
                datamodule.setup("fit")
                delivered = bench_loader(datamodule, batches)
                print(f"{name:<40}{workers:>8}{delivered:>11.0f}{delivered / consumed:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--loader-batches", type=int, default=60, help="timed loader batches")
    parser.add_argument(
        "--skip-compile", action="store_true", help="leave out torch.compile (~30 s to compile)"
    )
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rates = bench_training(args.steps, compiled=not args.skip_compile)
    if args.skip_loader:
        return
    consumed = rates["bf16 + channels-last"]
    print(f"\ndata loader, batch {BATCH}, LR patch {PATCH}, x{SCALE}; 'x step': patches/s over the")
    print(f"{consumed:.1f} patches/s the bf16 + channels-last step consumes")
    bench_loaders(consumed, args.loader_batches)


if __name__ == "__main__":
    main()
