"""The model zoo table: every ``conf/model`` network with its size, cost and CPU latency.

``python -m src.models`` (or ``make zoo``) prints a Markdown table: parameters, GFLOPs for one
LR input (counted by ``torch.utils.flop_counter`` on the meta device, so nothing heavy runs) and
the median CPU latency of a forward pass, with the thread count stated.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from src.archs.base import NetworkTraits, traits_of
from src.utils import config as _config  # noqa: F401  (registers the YAML resolvers)
from src.utils.choices import CHOICES, SEQUENCE, WINDOW
from src.utils.complexity import count_gflops, count_parameters
from src.utils.tables import markdown_table

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class ZooEntry:
    """One row of the zoo table."""

    name: str
    network: str
    params: int
    gflops: float
    latency_ms: float | None
    runs: int = 0


def model_names() -> list[str]:
    """The selectable ``model=`` options."""
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def network_class(name: str) -> tuple[type, str | None]:
    """The network class ``conf/model/<name>.yaml`` builds, and its ``upsampler`` if it sets
    one; nothing is instantiated."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
    net = cfg.model.net
    return hydra.utils.get_class(net._target_), net.get("upsampler")


def frames_text(traits: NetworkTraits) -> str:
    """How a network uses time, in the table's words."""
    if traits.frames == WINDOW:
        return f"window of {traits.window}"
    return {SEQUENCE: "clip"}.get(traits.frames, "image")


def choices_markdown() -> str:
    """The table of settings with fixed values (:data:`src.utils.choices.CHOICES`), then what
    each ``conf/model`` network declares: scales, image channels, tiling, bf16."""
    lines = ["| setting | valid values |", "|---|---|"]
    for choice in CHOICES:
        each = {"value": "", "items": " (each item)", "keys": " (each key)"}[choice.form]
        key = f"{choice.section}.{choice.key}" if choice.section else choice.key
        lines.append(f"| `{key}`{each} | {', '.join(choice.values)} |")
    header = ["model", "network", "frames", "scales", "channels", "tiles exact", "bf16 safe"]
    header.append("weights range")
    rows = []
    for name in model_names():
        cls, upsampler = network_class(name)
        traits = traits_of(cls)
        if traits is None:
            continue
        rows.append(
            [
                name,
                cls.__name__,
                frames_text(traits),
                traits.scales_text(upsampler),
                " or ".join(str(c) for c in traits.channels),
                "yes" if traits.tile_exact else "no",
                "yes" if traits.bf16_safe else "no",
                "0..255" if traits.value_range == 255.0 else "0..1",
            ]
        )
    return "\n".join([*lines, "", markdown_table(header, rows)])


def build_net(name: str, scale: int, device: str = "cpu") -> nn.Module:
    """Instantiate the network of ``conf/model/<name>.yaml`` at ``scale``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", f"scale={scale}"])
    with torch.device(device):
        net: nn.Module = hydra.utils.instantiate(cfg.model.net)
    return net.eval()


SLOW_SECONDS = 5.0


def _timed(net: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    net(x)
    return time.perf_counter() - start


@torch.no_grad()
def median_latency_ms(net: nn.Module, size: int, repeats: int) -> tuple[float, int]:
    """Median wall time (ms) of a forward pass on a ``size`` x ``size`` input, and the runs it
    took. A first run (warm-up) slower than ``SLOW_SECONDS`` is the measurement itself: at that
    length start-up costs are noise and repeating would take minutes."""
    x = torch.rand(1, 3, size, size)
    first = _timed(net, x)
    if first > SLOW_SECONDS:
        return first * 1e3, 1
    times = [_timed(net, x) for _ in range(repeats)]
    return statistics.median(times) * 1e3, repeats


def zoo_entry(name: str, scale: int, size: int, repeats: int) -> ZooEntry:
    """Measure one model config; latency only when ``repeats`` > 0."""
    meta_net = build_net(name, scale, device="meta")
    params = count_parameters(meta_net)
    gflops = count_gflops(meta_net, size)
    if repeats <= 0:
        return ZooEntry(name, type(meta_net).__name__, params, gflops, None)
    latency, runs = median_latency_ms(build_net(name, scale), size, repeats)
    return ZooEntry(name, type(meta_net).__name__, params, gflops, latency, runs)


def markdown(entries: list[ZooEntry], scale: int, size: int, threads: int) -> str:
    """The table, with its conditions in the header line."""
    lines = [
        f"x{scale}, LR input {size}x{size}, CPU latency: median of the timed runs after a warm-up"
        f" ({threads} threads); runs = 1: one run longer than {SLOW_SECONDS:.0f} s",
        "",
    ]
    header = ["model", "network", "params", "GFLOPs", "CPU latency (ms)", "runs"]
    rows = [
        [
            e.name,
            e.network,
            f"{e.params:,}",
            f"{e.gflops:.1f}",
            "-" if e.latency_ms is None else f"{e.latency_ms:.0f}",
            str(e.runs),
        ]
        for e in entries
    ]
    right = [False, False, True, True, True, True]
    return "\n".join([*lines, markdown_table(header, rows, right)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SR Lab model zoo: size, cost and CPU latency")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="LR input side in pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (0: no latency)")
    parser.add_argument("--models", nargs="*", default=None, help="default: every conf/model")
    args = parser.parse_args(argv)
    entries = []
    for name in args.models or model_names():
        print(f"measuring {name} ...", flush=True)
        entries.append(zoo_entry(name, args.scale, args.size, args.repeats))
    print(markdown(entries, args.scale, args.size, torch.get_num_threads()))
