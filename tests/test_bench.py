"""The benchmark's own arithmetic and its loader variants (not the timings themselves)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.run import bench_loaders, conv_training_flops


def test_conv_flops_count_forward_weight_and_input_gradients():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    net[2].weight.requires_grad_(False)
    pixels = 2 * 5 * 6
    first = 2 * pixels * 8 * 3 * 9  # forward + weight gradient; the data needs no gradient
    second = 2 * pixels * 4 * 8  # forward + input gradient; its weight is frozen
    assert conv_training_flops(net, (2, 3, 5, 6)) == 2 * first + 2 * second


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_every_loader_variant_delivers_batches(capsys: pytest.CaptureFixture[str]):
    torch.manual_seed(0)
    bench_loaders(consumed=10.0, batches=2)
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 8
    assert all(float(row.split()[-2]) > 0 for row in rows)


def test_cache_benchmark_measures_a_mapped_set(tmp_path):
    from bench.cache import measure, write_images

    write_images(tmp_path / "images", 2)
    result = measure(tmp_path / "images", "mapped", tmp_path / "cache")
    assert result["setup_s"] > 0 and result["patches_per_s"] > 0
    assert len(list((tmp_path / "cache").glob("*_whole_bicubic_*/hr.u8"))) == 1


def test_degradation_benchmark_times_both_paths(capsys: pytest.CaptureFixture[str], monkeypatch):
    from bench import degradation

    monkeypatch.setattr(
        "sys.argv", ["bench.degradation", "--batch", "2", "--batches", "1", "--repeats", "1"]
    )
    degradation.main()
    table = capsys.readouterr().out
    assert "| per patch (NumPy/OpenCV, one worker) |" in table and "| batch (torch, cpu) |" in table


@pytest.mark.slow
def test_gan_step_benchmark_times_both_steps(capsys: pytest.CaptureFixture[str], monkeypatch):
    from bench import gan_step

    argv = ["bench.gan_step", "--steps", "3", "--batch", "1", "--patch", "16"]
    monkeypatch.setattr("sys.argv", argv)
    gan_step.main()
    out = capsys.readouterr().out
    assert "| PSNR (L1, no critic) |" in out and "GAN step / PSNR step:" in out


def test_high_depth_benchmark_measures_every_format(
    capsys: pytest.CaptureFixture[str], monkeypatch
):
    from bench import high_depth

    monkeypatch.setattr("sys.argv", ["bench.high_depth", "--size", "64", "--repeats", "1"])
    high_depth.main()
    table = capsys.readouterr().out
    for name in high_depth.FORMATS:
        assert f"| {name} |" in table
    # Bytes per HR pixel kept (HR + LR at x2): 1.25 per channel-byte.
    assert "| 16-bit gray | " in table and " 2.50 |" in table and " 3.75 |" in table


def test_video_benchmark_runs_predict_on_a_clip(capsys: pytest.CaptureFixture[str], monkeypatch):
    from bench import video

    argv = ["bench.video", "--size", "32x24", "--frames", "2", "--models", "basicvsr"]
    monkeypatch.setattr("sys.argv", [*argv, "--bf16", "never"])
    video.main()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| BasicVSR |"))
    frames_per_s, peak_mb = float(row.split("|")[2]), float(row.split("|")[5])
    assert frames_per_s > 0 and peak_mb > 100  # torch alone takes more than 100 MB
    assert "2 frames of 32x24" in out and "bf16: this CPU has" in out
    assert "bf16 frames/s" not in out and "no bf16 run" in out


def test_video_benchmark_compares_frame_rates_with_edsr():
    from bench.video import Run, table

    rows = table({"edsr": Run(8.0, 12.0, 2**30, 4), "basicvsr": Run(16.0, 20.0, 2**31, 4)}, {})
    assert "| EDSR | 0.500 | 2.0 | 12.0 | 1024 | 1.00x |" in rows
    assert "| BasicVSR | 0.250 | 4.0 | 20.0 | 2048 | 0.50x |" in rows
    assert "bf16" not in rows


def test_video_benchmark_gives_bf16_rates_beside_fp32():
    from bench.video import Run, table

    fp32 = {"edsr": Run(8.0, 12.0, 2**30, 4), "basicvsr": Run(16.0, 20.0, 2**31, 4)}
    rows = table(fp32, {"basicvsr": Run(10.0, 14.0, 2**31, 4)})
    assert "bf16 frames/s | bf16 speed-up |" in rows
    assert "| BasicVSR | 0.250 | 4.0 | 20.0 | 2048 | 0.50x | 0.400 | 1.60x |" in rows
    assert "| EDSR | 0.500 | 2.0 | 12.0 | 1024 | 1.00x | - | - |" in rows


def test_video_benchmark_runs_bf16_when_asked(capsys: pytest.CaptureFixture[str], monkeypatch):
    from bench import video

    argv = ["bench.video", "--size", "64x48", "--frames", "2", "--models", "edsr", "--bf16"]
    monkeypatch.setattr("sys.argv", [*argv, "always", "--predict-args", "model.net.num_blocks=1"])
    video.main()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| EDSR |"))
    assert float(row.split("|")[7]) > 0 and "precision=bf16" in out


def test_efficient_recipe_table_has_one_row_per_step():
    from bench.efficient_recipe import Row, table

    psnr = {"Set5": 35.1, "Set14": 31.5, "B100": 30.6}
    rows = table(
        [
            Row("2. distilled", psnr, 44604, 0.75, 18.04, "torch fp32"),
            Row("6. int8", psnr, None, None, 14.3, "ORT int8"),
        ]
    )
    assert "| 2. distilled | 35.10 | 31.50 | 30.60 | 44,604 | 0.75 | 18.0 | torch fp32 |" in rows
    assert "| 6. int8 | 35.10 | 31.50 | 30.60 | - | - | 14.3 | ORT int8 |" in rows


@pytest.mark.slow
def test_efficient_recipe_runs_every_step(
    tmp_path, shared_data, shared_weights, capsys: pytest.CaptureFixture[str], monkeypatch
):
    """The whole path on a few steps: train, distil, fuse, prune, fine-tune, int8, scored."""
    from bench import efficient_recipe

    teacher = shared_weights / "bytedance_RLFN" / "rlfn_x2.pth"
    argv = ["efficient_recipe", "--data-dir", str(shared_data), "--teacher", str(teacher)]
    argv += ["--out", str(tmp_path), "--steps", "4", "--finetune-steps", "2", "--runs", "1"]
    monkeypatch.setattr("sys.argv", argv)
    efficient_recipe.main()
    out = capsys.readouterr().out
    for step in ("1. student", "2. distilled", "3. fused", "4. pruned", "5. pruned", "6. int8"):
        assert f"| {step}" in out
    assert (tmp_path / "6_int8.onnx").is_file()
