"""Training and data-loading throughput on this machine: ``make bench``.

Prints, with the thread count: the EDSR x2 training step (batch 16, LR patches 48) in fp32,
fp32 + channels-last and bf16 autocast + channels-last, as patches per second, achieved GFLOP/s
(convolution FLOPs counted analytically) and the ratio to this CPU's matrix-multiply peak measured
in the same run; and the data loader's patches per second at 0 and 2 workers. Medians of several
timed repetitions after a warm-up.

    python -m bench.run [--steps 6] [--skip-loader]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

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


def matmul_peak(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a square matrix multiply: the practical peak of this CPU."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    seconds = median_seconds(lambda: torch.mm(a, b), repeats)
    return 2 * size**3 / seconds / 1e9


def conv_flops(net: nn.Module, lr_shape: tuple[int, ...]) -> int:
    """Multiply-adds x 2 of every Conv2d in one forward pass, counted from output shapes."""
    total = 0

    def count(module: nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += 2 * output.numel() * kernel

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(lr_shape))
    for hook in hooks:
        hook.remove()
    return total


def training_step(channels_last: bool, bf16: bool) -> Callable[[], None]:
    """One EDSR optimiser step (forward, L1, backward, Adam) on random patches."""
    torch.manual_seed(0)
    net = EDSR(SCALE)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
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


def bench_training(repeats: int) -> dict[str, float]:
    """Print the training-step table; return patches per second by variant."""
    flops = 3 * conv_flops(EDSR(SCALE), (BATCH, 3, PATCH, PATCH))  # forward + 2x backward
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    print(
        f"EDSR x{SCALE} training step, batch {BATCH}, LR patch {PATCH}: "
        f"{flops / 1e9:.1f} GFLOP per step (convolutions, forward + backward)"
    )
    print(f"{'variant':<24}{'ms/step':>9}{'patches/s':>11}{'GFLOP/s':>9}{'of peak':>9}")
    rates = {}
    for name, channels_last, bf16 in (
        ("fp32", False, False),
        ("fp32 + channels-last", True, False),
        ("bf16 + channels-last", True, True),
    ):
        seconds = median_seconds(training_step(channels_last, bf16), repeats)
        achieved = flops / seconds / 1e9
        peak = peaks["bf16" if bf16 else "fp32"]
        rates[name] = BATCH / seconds
        print(
            f"{name:<24}{seconds * 1e3:>9.0f}{BATCH / seconds:>11.1f}{achieved:>9.0f}"
            f"{achieved / peak:>9.2f}"
        )
    return rates


def bench_loader(workers: int, batches: int) -> float:
    """Patches per second that the sample data module's training loader delivers."""
    from src.data.datamodule import SRDataModule
    from src.data.sources import SkimageImages

    train = SkimageImages(
        names=["astronaut", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
    )
    val = SkimageImages(names=["chelsea"], name="val")
    datamodule = SRDataModule(
        SCALE,
        [val],
        train,
        lr_patch_size=PATCH,
        batch_size=BATCH,
        num_workers=workers,
        num_patches=BATCH * (batches + 5),
    )
    datamodule.setup("fit")
    iterator = iter(datamodule.train_dataloader())
    for _ in range(5):  # start-up of workers is not throughput
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return BATCH * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rates = bench_training(args.steps)
    if args.skip_loader:
        return
    consumed = rates["bf16 + channels-last"]
    for workers in (0, 2):
        delivered = bench_loader(workers, batches=100)
        print(
            f"loader, {workers} workers: {delivered:.0f} patches/s "
            f"({delivered / consumed:.1f}x what the bf16 step consumes)"
        )


if __name__ == "__main__":
    main()
