"""16-bit and single-channel data end to end: decoding, the MATLAB resize at 16 bits, scores at
the data's own peak, training and validating on a folder of 16-bit gray images, and predictions
written back at 16 bits with one channel."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from src.archs.base import size_multiple_of
from src.archs.drrn import DRRN
from src.archs.edsr import EDSR
from src.archs.espcn import ESPCN
from src.archs.fsrcnn import FSRCNN
from src.archs.rcan import RCAN
from src.archs.rdn import RDN
from src.archs.rrdbnet import RRDBNet
from src.archs.srcnn import SRCNN
from src.archs.srvgg_compact import SRVGGNetCompact
from src.archs.vdsr import VDSR
from src.data.datasets import make_pairs, to_tensor
from src.data.degradations import BicubicDegradation
from src.io.dicom import MODALITY_OFFSET, read_dicom, write_dicom
from src.io.images import ImageReadError, NamedImage, PixelFormat, read_named, to_format
from src.io.predict_io import quantize, upscale_pixels
from src.metrics.paper import score_batch
from src.ops.imresize import imresize, imresize_array
from src.ops.inference import input_channels
from src.utils.errors import UserError
from tests.helpers import CONF_DIR, TINY, run_module


def gray16(seed: int, size: int = 72) -> np.ndarray:
    """A smooth 16-bit gray image using the whole 0..65535 range (a CT-like test card)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    image = 0.5 + 0.3 * np.sin(6 * x + seed) * np.cos(4 * y) + 0.05 * rng.standard_normal(x.shape)
    return np.clip(image * 65535, 0, 65535).astype(np.uint16)


@pytest.fixture
def gray16_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "ct"
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f"slice{index}.png"), gray16(index))
    return folder


# --- decoding ---------------------------------------------------------------------------------
def test_a_16bit_gray_file_stays_16bit_with_one_channel(gray16_folder: Path) -> None:
    image = read_named(gray16_folder / "slice0.png", PixelFormat(None, 1))
    assert image.pixels.dtype == np.uint16 and image.pixels.shape == (72, 72, 1)
    assert np.array_equal(image.pixels[:, :, 0], gray16(0))


def test_the_default_format_is_still_8bit_rgb(gray16_folder: Path) -> None:
    pixels = read_named(gray16_folder / "slice0.png").pixels
    assert pixels.dtype == np.uint8 and pixels.shape == (72, 72, 3)


def test_8bit_files_in_a_16bit_set_are_scaled_by_257() -> None:
    levels = np.array([[0, 1, 128, 255]], np.uint8)
    assert to_format(levels, "x", PixelFormat(16, 1))[0, :, 0].tolist() == [0, 257, 32896, 65535]


def test_a_colour_file_in_a_single_channel_set_is_refused() -> None:
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 9
    with pytest.raises(ImageReadError, match="colour image in a single-channel set"):
        to_format(colour, "photo.png", PixelFormat(8, 1))


def test_a_set_mixing_bit_depths_is_one_error_listing_them() -> None:
    images = [
        NamedImage("deep", to_format(gray16(0), "deep", PixelFormat(None, 1))),
        NamedImage("flat", np.zeros((72, 72, 1), np.uint8)),
    ]
    with pytest.raises(UserError, match=r"ct mixes bit depths \(8-bit: flat; 16-bit: deep\)"):
        make_pairs(images, "ct", 2, BicubicDegradation(), seed=0)


def test_16bit_pixels_become_unit_floats_at_their_own_peak() -> None:
    pixels = np.array([[[0], [32768], [65535]]], np.uint16)
    assert torch.allclose(to_tensor(pixels)[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]))


# --- the resize at 16 bits --------------------------------------------------------------------
def test_16bit_resize_rounds_to_16bit_levels_between_passes() -> None:
    """MATLAB resizes a uint16 image in double and casts to uint16 after each pass: the same
    as the float resize of one dimension at a time, rounded half up to 0..65535 each time."""
    hr = gray16(3, size=40)[:, :36]
    lr = imresize_array(hr, 0.5)
    assert lr.dtype == np.uint16 and lr.shape == (20, 18)
    work = torch.from_numpy(hr.astype(np.float64))
    for size in ((20, 36), (20, 18)):  # equal scales: height first, as MATLAB does
        work = imresize(work, size=size)
        work = torch.floor(work.clamp(0, 65535) + 0.5)
    assert np.array_equal(lr, work.numpy().astype(np.uint16))
    assert len(np.unique(lr)) > 256  # not limited to 8-bit levels


# --- scores at the data's precision -----------------------------------------------------------
def test_psnr_at_peak_65535_equals_the_hand_computation() -> None:
    hr = gray16(1, size=40).astype(np.float64)
    sr = np.clip(hr + np.random.default_rng(0).normal(0, 300, hr.shape), 0, 65535).round()
    border = 2
    mse = np.mean((sr - hr)[border:-border, border:-border] ** 2)
    expected = 10 * math.log10(65535.0**2 / mse)
    scores = score_batch(
        torch.from_numpy(sr / 65535)[None, None],
        torch.from_numpy(hr / 65535)[None, None],
        border,
        peak=65535.0,
    )[0]
    assert scores.psnr_y == pytest.approx(expected, abs=1e-9)
    assert scores.psnr_rgb == scores.psnr_y  # one channel: the value is scored
    assert 0.0 < scores.ssim_y < 1.0


def test_8bit_scores_are_unchanged_by_the_peak_argument() -> None:
    rng = np.random.default_rng(5)
    hr = torch.from_numpy(rng.integers(0, 256, (1, 3, 30, 30)) / 255.0)
    sr = (hr + torch.from_numpy(rng.normal(0, 0.02, hr.shape))).clamp(0, 1)
    assert score_batch(sr, hr, 2) == score_batch(sr, hr, 2, peak=255.0)


def test_the_bicubic_baseline_of_a_16bit_set_is_scored_at_its_peak() -> None:
    """The baseline printed beside a 16-bit run's result is scored as the run is (it was once
    rounded to 8 bits: 62.88 dB against 65.67 for the same CT slice)."""
    from src.data.datasets import ValidationImages
    from src.metrics.baseline import bicubic_scores

    image = NamedImage("card", to_format(gray16(4), "card", PixelFormat(16, 1)))
    pairs = make_pairs([image], "ct", 2, BicubicDegradation(), seed=0)
    batch = {
        key: value[None] if isinstance(value, torch.Tensor) else [value]
        for key, value in ValidationImages.decoded(pairs)[0].items()
    }
    sr = imresize(batch["lr"], scale=2.0).clamp(0, 1)
    expected = score_batch(sr, batch["hr"], 2, peak=65535.0)[0].psnr_y
    assert bicubic_scores([batch], 2)["psnr_y"] == pytest.approx(expected, abs=1e-9)


SINGLE_CHANNEL_NETWORKS = {
    "edsr": lambda: EDSR(2, num_blocks=1, num_features=8, num_channels=1),
    "rcan": lambda: RCAN(
        2, num_groups=1, num_blocks=1, num_features=16, reduction=4, num_channels=1
    ),
    "rdn": lambda: RDN(
        2, num_blocks=2, num_layers=2, growth_rate=8, num_features=16, num_channels=1
    ),
    "rrdbnet": lambda: RRDBNet(2, num_features=8, num_blocks=1, growth_rate=4, num_channels=1),
    "srvgg_compact": lambda: SRVGGNetCompact(2, 8, 2, in_channels=1, out_channels=1),
}


def single_channel_configs() -> list[str]:
    """The model configs whose networks follow data.channels."""
    return [
        path.stem
        for path in sorted((CONF_DIR / "model").glob("*.yaml"))
        if "data.channels" in path.read_text()
    ]


@pytest.mark.parametrize("model", single_channel_configs())
def test_every_model_config_that_follows_data_channels_gives_one_channel(model: str) -> None:
    """Shapes only, on the meta device (no weights are initialised, nothing heavy runs)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={model}", "data.channels=1", "scale=2"])
    with torch.device("meta"):
        net = hydra.utils.instantiate(cfg.model.net).eval()
        out = net(torch.empty(1, 1, 16, 16))
    assert input_channels(net) == 1
    assert tuple(out.shape) == (1, 1, 32, 32)


def test_single_channel_models_include_the_zoo_families() -> None:
    configs = set(single_channel_configs())
    assert {"edsr", "rcan", "rdn", "rrdbnet", "swinir", "hat", "dat", "imdn", "rlfn"} <= configs


@pytest.mark.parametrize("name", sorted(SINGLE_CHANNEL_NETWORKS))
def test_single_channel_networks_take_and_give_one_channel(name: str) -> None:
    net = SINGLE_CHANNEL_NETWORKS[name]().eval()
    multiple = size_multiple_of(net)  # RRDBNet x2 pixel-unshuffles: even sides
    height, width = 13 + -13 % multiple, 11 + -11 % multiple
    with torch.no_grad():
        out = net(torch.rand(1, 1, height, width))
    assert out.shape == (1, 1, 2 * height, 2 * width) and torch.isfinite(out).all()


@pytest.mark.parametrize("network", [SRCNN, FSRCNN, ESPCN, VDSR, DRRN])
def test_y_only_networks_take_rgb_images(network: type[torch.nn.Module]) -> None:
    """They convolve one channel (Y) but take and give RGB: predict and export feed them RGB."""
    assert input_channels(network(2)) == 3


def test_a_single_channel_set_through_an_rgb_only_network_is_refused(
    gray16_folder: Path, tmp_path: Path
) -> None:
    result = run_module(
        "src.train",
        [
            "data=folder",
            f"data.root={gray16_folder}",
            "data.channels=1",
            "model=span",
            "trainer.max_steps=1",
            "logger=csv",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "data.channels=1: SPAN takes 3-channel images only" in errors[0]


# --- prediction -------------------------------------------------------------------------------
def test_a_single_channel_network_upscales_gray_and_refuses_colour() -> None:
    def doubler(lr: torch.Tensor) -> torch.Tensor:
        assert lr.shape[1] == 1
        return torch.nn.functional.interpolate(lr, scale_factor=2, mode="nearest")

    gray = gray16(2, size=20)
    out = upscale_pixels(doubler, gray, channels=1)
    assert out.dtype == np.uint16 and out.shape == (40, 40)
    assert np.array_equal(out[::2, ::2], gray)
    with pytest.raises(ImageReadError, match="network takes one channel"):
        upscale_pixels(doubler, np.zeros((4, 4, 3), np.uint16), channels=1)


# --- the recipe, end to end -------------------------------------------------------------------
@pytest.mark.parametrize("channels", ["1", pytest.param("auto", marks=pytest.mark.slow)])
def test_16bit_gray_folder_trains_validates_and_predicts_16bit_gray(
    gray16_folder: Path, tmp_path: Path, channels: str
) -> None:
    run_dir = tmp_path / "train"
    result = run_module(
        "src.train",
        [
            "data=folder",
            f"data.root={gray16_folder}",
            "data.bit_depth=16",
            f"data.channels={channels}",
            "model=edsr",
            *TINY,
            "trainer.max_steps=2",
            f"hydra.run.dir={run_dir}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "best PSNR_Y" in result.stdout
    results = sorted(run_dir.rglob("metrics.csv"))
    assert results, list(run_dir.rglob("*"))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    stored = torch.load(checkpoint, map_location="cpu", weights_only=False)
    net_config = stored["srlab"]["model_config"]["net"]
    assert net_config["num_channels"] == 1
    assert stored["state_dict"]["net.head.weight"].shape[1] == 1

    out = tmp_path / "sr"
    predicted = run_module(
        "src.predict",
        [
            f"ckpt_path={checkpoint}",
            f"input={gray16_folder / 'slice1.png'}",
            f"output={out}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'predict'}",
        ],
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    written = cv2.imread(str(out / "slice1.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (144, 144)
    assert len(np.unique(written)) > 256


def test_eval_scores_a_16bit_gray_folder_at_peak_65535(gray16_folder: Path, tmp_path: Path) -> None:
    """The bicubic model on the 16-bit set: src.eval's per-image PSNR equals PSNR at peak 65535
    computed here from the same LR and the MATLAB bicubic upscale."""
    result = run_module(
        "src.eval",
        [
            "model=bicubic",
            "data=folder",
            f"data.root={gray16_folder}",
            "data.bit_depth=16",
            "data.channels=1",
            "comparisons=0",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "16-bit, on the single-channel value, peak 65535" in result.stdout
    records = json.loads((tmp_path / "results.json").read_text())
    assert records["meta"]["scoring"] == ["16-bit, on the single-channel value, peak 65535"]
    images = records["images"]
    first = images[0]
    hr = read_named(gray16_folder / f"{first['name']}.png", PixelFormat(16, 1)).pixels[:, :, 0]
    lr = imresize_array(hr, 0.5)
    lr_unit = torch.from_numpy(lr.astype(np.float32)) / 65535  # as the data module feeds it
    sr = imresize(lr_unit, scale=2.0).clamp(0, 1)
    sr_levels = (sr.double() * 65535).round().numpy()
    diff = (sr_levels - hr.astype(np.float64))[2:-2, 2:-2]
    expected = 10 * math.log10(65535.0**2 / np.mean(diff**2))
    assert first["psnr_y"] == pytest.approx(expected, abs=1e-6)


# --- DICOM ------------------------------------------------------------------------------------
def pydicom_file(name: str) -> Path:
    pydicom_data = pytest.importorskip("pydicom.data")
    return Path(pydicom_data.get_testdata_file(name))


def test_a_ct_slice_is_read_as_hounsfield_units_on_the_16bit_grid() -> None:
    import pydicom

    path = pydicom_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    hounsfield = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    pixels = read_named(path, PixelFormat(16, 1)).pixels[:, :, 0]
    assert pixels.dtype == np.uint16
    assert np.array_equal(pixels.astype(np.int64) - MODALITY_OFFSET, hounsfield.astype(np.int64))


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_read_upscale_write_keeps_the_tags_and_divides_the_spacing(
    name: str, tmp_path: Path
) -> None:
    import pydicom

    source = pydicom_file(name)
    out = tmp_path / "sr"
    result = run_module(
        "src.predict",
        [
            "model=bicubic",
            "scale=2",
            f"input={source}",
            f"output={out}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    before, after = pydicom.dcmread(source), pydicom.dcmread(out / name)
    assert (after.Rows, after.Columns) == (2 * before.Rows, 2 * before.Columns)
    assert [float(v) for v in after.PixelSpacing] == pytest.approx(
        [float(v) / 2 for v in before.PixelSpacing]
    )
    assert after.SOPInstanceUID != before.SOPInstanceUID
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
    changed = {"Rows", "Columns", "PixelSpacing", "PixelData", "SOPInstanceUID"}
    for element in before:
        if element.keyword and element.keyword not in changed:
            assert after[element.tag].value == element.value, element.keyword
    assert "SR Lab x2" in after.DerivationDescription
    # The pixels: MATLAB bicubic of the modality values, stored back through slope/intercept.
    lr = read_dicom(source).astype(np.float32) / 65535
    expected = quantize(imresize(torch.from_numpy(lr), scale=2.0).clamp(0, 1).numpy(), np.uint16)
    assert np.array_equal(read_dicom(out / name), expected)


def test_a_folder_of_dicom_slices_is_a_16bit_single_channel_data_set(tmp_path: Path) -> None:
    folder = tmp_path / "slices"
    folder.mkdir()
    for index in range(3):
        (folder / f"ct{index}.dcm").write_bytes(pydicom_file("CT_small.dcm").read_bytes())
    result = run_module(
        "src.eval",
        [
            "model=bicubic",
            "data=folder",
            f"data.root={folder}",
            "data.channels=auto",
            "comparisons=0",
            "trainer.enable_progress_bar=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data.channels=auto: 1" in result.stdout + result.stderr
    records = json.loads((tmp_path / "run" / "results.json").read_text())
    images = records["images"] if isinstance(records, dict) else records
    assert images and all(record["psnr_y"] > 40 for record in images)


@pytest.mark.parametrize(
    "name", ["MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"]
)
def test_a_slice_of_any_encoding_is_written_back_exactly(name: str, tmp_path: Path) -> None:
    """Big-endian, implicit-VR and compressed sources: the new pixels are written as explicit VR
    little endian, uncompressed, and read back exactly."""
    import pydicom

    source = pydicom_file(name)
    upscaled = np.repeat(np.repeat(read_dicom(source), 2, 0), 2, 1)
    target = tmp_path / name
    write_dicom(target, upscaled, source, 2)
    assert np.array_equal(read_dicom(target), upscaled)
    written = pydicom.dcmread(target)
    assert written.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert written.PatientName == pydicom.dcmread(source).PatientName


def test_dicom_output_of_a_png_input_is_one_error_line(gray16_folder: Path, tmp_path: Path) -> None:
    result = run_module(
        "src.predict",
        [
            "model=bicubic",
            "scale=2",
            f"input={gray16_folder / 'slice0.png'}",
            "output_format=dcm",
            f"output={tmp_path / 'sr'}",
            "progress=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("DICOM output needs a DICOM input" in line for line in errors), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "sr" / "slice0.dcm").exists()


@pytest.mark.parametrize("suffix", [pytest.param("dcm", marks=pytest.mark.slow), "png"])
def test_the_8bit_disk_cache_refuses_16bit_files_under_bit_depth_auto(
    tmp_path: Path, suffix: str
) -> None:
    """data.bit_depth=auto with cache=mapped: validation decodes 16 bits, so the 8-bit cache
    may not train on rounded copies; data.bit_depth=8 asks for those and gets them."""
    folder = tmp_path / "slices"
    folder.mkdir()
    for index in range(4):
        if suffix == "dcm":
            (folder / f"ct{index}.dcm").write_bytes(pydicom_file("CT_small.dcm").read_bytes())
        else:
            cv2.imwrite(str(folder / f"ct{index}.png"), gray16(index, size=96))
    common = [
        "data=folder",
        f"data.root={folder}",
        "data.train_set.val_count=1",
        "cache=mapped",
        f"data.cache.dir={tmp_path / 'cache'}",
        "model=edsr",
        *TINY,
        "data.lr_patch_size=8",
        "trainer.max_steps=2",
    ]
    refused = run_module("src.train", [*common, f"hydra.run.dir={tmp_path / 'auto'}"])
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is a 16-bit image" in errors[0] and f"ct0.{suffix}" in errors[0]
    assert not list((tmp_path / "cache").glob("*/index.json"))  # no cache was published

    rounded = run_module(
        "src.train", [*common, "data.bit_depth=8", f"hydra.run.dir={tmp_path / 'eight'}"]
    )
    assert rounded.returncode == 0, rounded.stderr[-3000:]
