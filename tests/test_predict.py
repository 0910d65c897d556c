"""src.predict: every input kind, errors that spare other files, overwrite protection, tiling."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import open_dict
from PIL import Image, ImageOps

from src.io.images import write_image
from src.io.media import NoInputsError, read_image
from src.io.predict_io import LUMA_WEIGHTS, upscale_files, upscale_pixels
from src.io.video import VideoError, probe_video, read_video_frames
from src.ops.imresize import imresize
from src.ops.inference import TileError, auto_tile, measure_bytes_per_lr_pixel, upscale
from src.predict import predict
from src.utils.errors import UserError
from tests.helpers import compose_config, run_module
from tests.predict_helpers import MICRO, micro_module, quantize, smooth_image, write_checkpoint


def nearest(lr: torch.Tensor) -> torch.Tensor:
    """An exact x2 'network' (pixel repetition), so expected outputs can be computed by hand."""
    return lr.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def decode(path: Path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


def predict_cfg(tmp_path: Path, *overrides: str, output: Path | None = None):
    cfg = compose_config(
        "predict", ["scale=2", *MICRO, "progress=false", *overrides], tmp_path / "run"
    )
    with open_dict(cfg):
        cfg.output = str(output or tmp_path / "out")
    return cfg


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    module, _ = micro_module(tmp_path)
    return write_checkpoint(tmp_path / "micro.ckpt", module)


# --- pixels ----------------------------------------------------------------------------------
def test_gray_runs_as_rgb_and_comes_back_as_luma():
    gray = quantize(smooth_image(10, 12, 1))

    def tinted(lr: torch.Tensor) -> torch.Tensor:  # a 'network' that colours its output
        return nearest(lr) * torch.tensor([1.0, 0.5, 0.25]).view(1, 3, 1, 1)

    out = upscale_pixels(tinted, gray)
    assert out.shape == (20, 24) and out.dtype == np.uint8
    expected = np.repeat(np.repeat(gray / 255.0, 2, 0), 2, 1) * float(LUMA_WEIGHTS @ [1, 0.5, 0.25])
    assert np.abs(out.astype(float) - expected * 255).max() <= 0.51


def test_alpha_is_upscaled_by_bicubic_and_reattached():
    rgba = quantize(smooth_image(9, 11, 4))
    out = upscale_pixels(nearest, rgba)
    assert out.shape == (18, 22, 4)
    assert np.array_equal(out[:, :, :3], np.repeat(np.repeat(rgba[:, :, :3], 2, 0), 2, 1))
    alpha = imresize(torch.from_numpy(rgba[:, :, 3] / 255.0).float(), size=(18, 22))
    assert np.array_equal(out[:, :, 3], quantize(alpha.clamp(0, 1).numpy()))


def test_sixteen_bit_stays_sixteen_bit_without_losing_precision():
    deep = quantize(smooth_image(8, 8, 3), np.uint16)
    assert np.unique(deep % 257).size > 1  # values an 8-bit image cannot hold
    out = upscale_pixels(nearest, deep)
    assert out.dtype == np.uint16
    assert np.array_equal(out, np.repeat(np.repeat(deep, 2, 0), 2, 1))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path: Path, orientation: int):
    pixels = quantize(smooth_image(6, 10, 3, seed=orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(read_image(path), expected)


def test_exif_orientation_is_read_from_images_over_pillows_pixel_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "tall.png"
    Image.fromarray(quantize(smooth_image(6, 10, 3, seed=0))).save(path, exif=exif.tobytes())
    # Pillow refuses images over twice MAX_IMAGE_PIXELS (179 MP by default; 200 MP phone photos
    # exist); lowered here so that the file stays small.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    assert read_image(path).shape[:2] == (10, 6)  # rotated upright
    assert Image.MAX_IMAGE_PIXELS == 20


# --- files -----------------------------------------------------------------------------------
def write_inputs(folder: Path) -> dict[str, np.ndarray]:
    """One file of each kind; returns the pixels each holds (RGB(A) order, upright)."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "rgb.png": quantize(smooth_image(16, 20, 3, 1)),
        "gray.png": quantize(smooth_image(16, 20, 1, 2)),
        "rgba.png": quantize(smooth_image(16, 20, 4, 3)),
        "deep.png": quantize(smooth_image(16, 20, 3, 4), np.uint16),
        "photo.webp": quantize(smooth_image(16, 20, 3, 5)),
        "scan.tiff": quantize(smooth_image(16, 20, 1, 6), np.uint16),
    }
    for name, pixels in images.items():
        write_image(folder / name, pixels)
    return images


def test_folder_of_every_image_kind_keeps_format_channels_and_depth(
    tmp_path: Path, checkpoint: Path
):
    images = write_inputs(tmp_path / "in")
    report = predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={tmp_path / 'in'}"))
    assert report.images == len(images) and not report.failed
    for name, pixels in images.items():
        out = decode(tmp_path / "out" / name)
        assert out.dtype == pixels.dtype, name
        assert out.shape[:2] == (32, 40), name
        assert out.shape[2:] == pixels.shape[2:], name
    assert report.pixels_in == 6 * 16 * 20 and report.pixels_out == 4 * report.pixels_in


def test_jpeg_with_exif_orientation_comes_out_upright(tmp_path: Path, checkpoint: Path):
    stored = quantize(smooth_image(16, 24, 3))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={tmp_path / 'phone.jpg'}"))
    out = tmp_path / "out" / "phone.jpg"
    assert decode(out).shape == (48, 32, 3)  # upright: 24 x 16, doubled
    assert Image.open(out).getexif().get(0x0112, 1) == 1


def test_glob_selects_files_and_output_format_converts(tmp_path: Path, checkpoint: Path):
    write_inputs(tmp_path / "in")
    cfg = predict_cfg(
        tmp_path,
        f"ckpt_path={checkpoint}",
        f"input={tmp_path / 'in' / '*.png'}",
        "output_format=jpg",
    )
    report = predict(cfg)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["deep.jpg", "gray.jpg", "rgb.jpg", "rgba.jpg"]
    assert report.images == 4
    assert decode(tmp_path / "out" / "deep.jpg").dtype == np.uint8  # JPEG holds 8 bits
    assert decode(tmp_path / "out" / "rgba.jpg").shape == (32, 40, 3)  # and no alpha


def write_video(path: Path, frames: int, fps: float, size: tuple[int, int] = (24, 16)) -> None:
    codec = "mp4v" if path.suffix == ".mp4" else "MJPG"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), fps, size)
    for index in range(frames):
        writer.write(quantize(smooth_image(size[1], size[0], 3, seed=index)))
    writer.release()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_is_upscaled_frame_by_frame_at_its_frame_rate(
    tmp_path: Path, checkpoint: Path, suffix: str
):
    source = tmp_path / f"clip{suffix}"
    write_video(source, frames=5, fps=12.5)
    report = predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={source}"))
    assert (report.videos, report.frames) == (1, 5)
    capture = cv2.VideoCapture(str(tmp_path / "out" / source.name))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.5)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
        48,
        32,
    )
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 5


def test_a_failing_video_leaves_no_partial_file(tmp_path: Path):
    source = tmp_path / "clip.mp4"
    write_video(source, frames=4, fps=10)
    calls = []

    def breaks_on_third_frame(lr: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return nearest(lr)

    out = tmp_path / "out"
    report = upscale_files(breaks_on_third_frame, [source], out, 2, progress=False)
    assert report.failed == [source]
    assert list(out.iterdir()) == []  # neither clip.mp4 nor its temporary file


def predict_folder(checkpoint: Path, folder: Path, out: Path, run_dir: Path):
    """``src.predict`` of every file in ``folder`` into ``out``, in a subprocess."""
    return run_module(
        "src.predict",
        [
            f"ckpt_path={checkpoint}",
            f"input={folder}",
            f"output={out}",
            "progress=false",
            f"hydra.run.dir={run_dir}",
        ],
    )


def test_corrupt_input_is_named_others_still_run_and_exit_status_says_so(
    tmp_path: Path, checkpoint: Path
):
    folder = tmp_path / "in"
    write_inputs(folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    result = predict_folder(checkpoint, folder, out, tmp_path / "run")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("broken.png" in line and "not a readable image" in line for line in errors)
    assert any("broken.mp4" in line and "not a readable video" in line for line in errors)
    assert "Traceback" not in result.stderr
    assert "6 images" in result.stdout and "2 failed" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.glob("[!b]*"))


def test_existing_outputs_are_kept_unless_overwrite(tmp_path: Path, checkpoint: Path, capsys):
    folder = tmp_path / "in"
    write_inputs(folder)
    out = tmp_path / "out"
    out.mkdir()
    (out / "rgb.png").write_bytes(b"mine")
    report = predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={folder}"))
    assert report.skipped == [out / "rgb.png"] and report.images == 5
    assert (out / "rgb.png").read_bytes() == b"mine"
    assert "skipped 1 existing" in capsys.readouterr().out
    report = predict(
        predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={folder}", "overwrite=true")
    )
    assert report.images == 6 and decode(out / "rgb.png").shape == (32, 40, 3)


def test_no_inputs_and_bad_options_are_user_errors(tmp_path: Path, checkpoint: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(NoInputsError, match="no images or videos"):
        predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={tmp_path / 'empty'}"))
    with pytest.raises(UserError, match="tile must be"):
        predict(predict_cfg(tmp_path, f"input={tmp_path}", "tile=big"))
    with pytest.raises(UserError, match="output_format must be"):
        predict(predict_cfg(tmp_path, f"input={tmp_path}", "output_format=gif"))
    write_inputs(tmp_path / "in")
    with pytest.raises(UserError, match="replace the input"):
        predict(predict_cfg(tmp_path, f"input={tmp_path / 'in'}", output=tmp_path / "in"))


# --- tiling ----------------------------------------------------------------------------------
def test_tiled_prediction_matches_whole_image(tmp_path: Path, checkpoint: Path):
    write_image(tmp_path / "big.png", quantize(smooth_image(50, 70, 3)))
    outputs = {}
    for tile in ("null", "16"):
        out = tmp_path / f"out_{tile}"
        cfg = predict_cfg(
            tmp_path,
            f"ckpt_path={checkpoint}",
            f"input={tmp_path / 'big.png'}",
            f"tile={tile}",
            "tile_overlap=8",
            output=out,
        )
        predict(cfg)
        outputs[tile] = decode(out / "big.png").astype(int)
    assert np.abs(outputs["null"] - outputs["16"]).max() <= 1


def test_self_ensemble_prediction_is_the_shared_path(tmp_path: Path, checkpoint: Path):
    pixels = quantize(smooth_image(12, 14, 3))
    write_image(tmp_path / "small.png", pixels)
    cfg = predict_cfg(
        tmp_path,
        f"ckpt_path={checkpoint}",
        f"input={tmp_path / 'small.png'}",
        "self_ensemble=true",
        "tile=null",
    )
    predict(cfg)
    module, _ = micro_module(tmp_path)
    lr = torch.from_numpy(pixels / 255.0).float().permute(2, 0, 1)[None]
    with torch.no_grad():
        sr = upscale(lambda x: module.run_net(x, module.net), lr, 2, self_ensemble=True)
    expected = quantize(sr[0].clamp(0, 1).permute(1, 2, 0).numpy())
    got = cv2.cvtColor(decode(tmp_path / "out" / "small.png"), cv2.COLOR_BGR2RGB)
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_auto_tile_fits_the_budget_and_matches_whole_image(tmp_path: Path):
    module, _ = micro_module(tmp_path)
    net = module.net
    lr = torch.rand(1, 3, 90, 70)
    per_pixel = measure_bytes_per_lr_pixel(net, lr)
    assert per_pixel > 8 * 4 * 3  # at least a few feature maps of 8 float channels
    assert auto_tile(net, lr, overlap=8, memory_mb=1024) is None  # fits whole
    budget_mb = 48**2 * per_pixel * 1.25 / 2**20  # room for a 48 px patch: 32 + 2 x 8
    tile = auto_tile(net, lr, overlap=8, memory_mb=budget_mb)
    assert tile is not None and 30 <= tile <= 32
    with torch.no_grad():
        tiled = upscale(net, lr, 2, tile="auto", tile_overlap=8, tile_memory_mb=budget_mb)
        assert torch.allclose(tiled, net(lr), atol=1e-5)
    with pytest.raises(TileError, match="too small"):
        auto_tile(net, lr, overlap=8, memory_mb=budget_mb / 10)


def test_written_levels_round_as_the_metric_path_rounds():
    """Floats within an ulp of a half level: float32 products round some of them the other way,
    so a written PNG would score differently from the same output scored in memory."""
    from src.io.predict_io import quantize as quantize_as_written
    from src.metrics.paper import to_uint8_levels

    steps = np.arange(-20, 20, dtype=np.float32) * np.float32(6e-9)
    unit = (np.float32(100.5 / 255) + steps).astype(np.float32).reshape(4, 10)
    expected = to_uint8_levels(torch.from_numpy(unit)).numpy()
    assert (np.rint(unit * np.float32(255)) != expected).any()  # the trap is real here
    np.testing.assert_array_equal(quantize_as_written(unit, np.dtype(np.uint8), rows=3), expected)


# --- the same image as eval scores ----------------------------------------------------------
def benchmark_and_lr(root: Path, scale: int) -> tuple[Path, Path]:
    """A two-image set ``Mini`` under ``root/benchmarks`` (sizes that are no multiple of the
    scale) and, beside it, the LR images eval makes of them: MATLAB bicubic of the mod-cropped
    HR, written as PNG."""
    from src.data.degradations import BicubicDegradation
    from src.ops.imresize import modcrop

    hr_dir, lr_dir = root / "benchmarks" / "Mini" / "HR", root / "lr"
    for index, (height, width) in enumerate([(50, 61), (43, 38)]):
        hr = quantize(smooth_image(height, width, 3, seed=index))
        write_image(hr_dir / f"im{index}.png", hr)
        lr = BicubicDegradation()(modcrop(hr, scale), scale, np.random.default_rng(0))
        write_image(lr_dir / f"im{index}.png", lr)
    return hr_dir, lr_dir


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_predict_writes_the_image_whose_score_eval_prints(tmp_path: Path, precision: str):
    """Predict the LR eval makes, score the written PNGs with src.score: the per-image rows
    equal src.eval's for the same checkpoint and HR images, whatever precision eval's Trainer
    is given (what ``auto`` picks on a CPU with native bf16)."""
    import json

    from src.eval import evaluate
    from src.score import score

    scale = 3
    module, _ = micro_module(tmp_path, scale, ["model.ema_decay=0.9", "model.value_range=255"])
    checkpoint = write_checkpoint(tmp_path / "micro.ckpt", module)
    hr_dir, lr_dir = benchmark_and_lr(tmp_path, scale)
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={checkpoint}",
            "data=benchmark",
            "data.sets=[Mini]",
            f"paths.data_dir={tmp_path}",
            "comparisons=0",
            "trainer.enable_progress_bar=false",
            f"trainer.precision={precision}",
        ],
        tmp_path / "eval",
    )
    evaluate(cfg)
    predict(predict_cfg(tmp_path, f"ckpt_path={checkpoint}", f"input={lr_dir}"))
    score(
        compose_config(
            "score", [f"pred={tmp_path / 'out'}", f"gt={hr_dir}", f"scale={scale}"], tmp_path / "s"
        )
    )
    by_eval = json.loads((tmp_path / "eval" / "results.json").read_text())["images"]
    by_score = json.loads((tmp_path / "s" / "results.json").read_text())["images"]
    assert [r["name"] for r in by_eval] == [r["name"] for r in by_score] == ["im0", "im1"]
    for evaluated, scored in zip(by_eval, by_score, strict=True):
        for column in ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb"):
            assert scored[column] == evaluated[column], column


def test_predict_runs_in_fp32_inside_bf16_autocast(tmp_path: Path, checkpoint: Path):
    """An enclosing autocast (a notebook, a Lightning hook) does not change the written image:
    predict runs the network in fp32 with autocast off, as eval does."""
    write_image(tmp_path / "in.png", quantize(smooth_image(20, 26, 3)))
    written = {}
    for name, context in (("fp32", contextlib.nullcontext()), ("bf16", bf16_autocast())):
        out = tmp_path / name
        with context:
            predict(
                predict_cfg(
                    tmp_path, f"ckpt_path={checkpoint}", f"input={tmp_path / 'in.png'}", output=out
                )
            )
        written[name] = decode(out / "in.png")
    assert np.array_equal(written["fp32"], written["bf16"])


def bf16_autocast() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_precision_bf16_runs_under_autocast_and_says_so(tmp_path: Path, checkpoint: Path, capsys):
    """precision=bf16 computes in bf16 (the written image moves, a little) and prints a note;
    the default stays fp32. The CPU's bf16 instructions change the speed, not the result's
    closeness, so the test holds on every CPU."""
    image = quantize(smooth_image(20, 26, 3))
    write_image(tmp_path / "in.png", image)
    written = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        cfg = predict_cfg(
            tmp_path,
            f"ckpt_path={checkpoint}",
            f"input={tmp_path / 'in.png'}",
            f"precision={precision}",
            output=out,
        )
        predict(cfg)
        written[precision] = decode(out / "in.png").astype(int)
    difference = np.abs(written["fp32"] - written["bf16"])
    assert 0 < difference.max() <= 8
    assert "runs under bf16 autocast (precision=bf16)" in capsys.readouterr().out


def test_precision_is_checked_and_refused_for_onnx(tmp_path: Path):
    write_image(tmp_path / "in.png", quantize(smooth_image(8, 8, 3)))
    with pytest.raises(UserError, match="precision"):
        predict(predict_cfg(tmp_path, f"input={tmp_path}", "precision=fp16"))
    with pytest.raises(UserError, match="precision=bf16 is for torch networks"):
        predict(
            predict_cfg(
                tmp_path, f"input={tmp_path}", f"onnx_path={tmp_path / 'x.onnx'}", "precision=bf16"
            )
        )


# --- videos that are not whole --------------------------------------------------------------
def test_a_truncated_video_is_a_failure_and_leaves_no_output(tmp_path: Path, checkpoint: Path):
    """An AVI whose header announces 20 frames, cut so that only 9 decode: the run names the
    file and where decoding stopped, counts it as failed, exits 1 and writes nothing under its
    name."""
    whole = tmp_path / "whole.avi"
    write_video(whole, frames=20, fps=10)
    data = whole.read_bytes()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "cut.avi").write_bytes(data[: int(len(data) * 0.7)])
    assert probe_video(folder / "cut.avi").header_frames == 20
    decodable = 0
    with pytest.raises(VideoError):
        for _ in read_video_frames(folder / "cut.avi"):
            decodable += 1
    assert 0 < decodable < 20
    out = tmp_path / "out"
    result = predict_folder(checkpoint, folder, out, tmp_path / "run")
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("cut.avi" in line and f"after {decodable} good frames" in line for line in errors), (
        result.stderr[-2000:]
    )
    assert "1 failed" in result.stdout
    assert list(out.iterdir()) == []
