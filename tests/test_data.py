"""Image decoding, sources, LR/HR pairs, patches and the data module."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from src.data.datamodule import SRDataModule
from src.data.datasets import PatchDataset, ValidationImages, d4_transform, make_pairs
from src.data.degradations import AlbumentationsDegradation, BicubicDegradation
from src.data.sources import DatasetNotFoundError, FolderImages, SkimageImages, split_files
from src.io.images import ImageReadError, NamedImage, read_rgb
from src.ops.imresize import imresize_uint8


def photo(seed: int, height: int = 64, width: int = 80) -> np.ndarray:
    """A smooth random RGB image (uint8), so downscaling is meaningful."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8, width // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def write_folder(folder: Path, count: int, **size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i + 1:03d}.png"
        cv2.imwrite(str(path), photo(i, **size)[:, :, ::-1])
        paths.append(path)
    return paths


def test_read_rgb_returns_rgb_order(tmp_path: Path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "b.png"), bgr)
    rgb = read_rgb(tmp_path / "b.png")
    assert rgb.shape == (4, 5, 3) and rgb[0, 0].tolist() == [0, 0, 200]


def test_read_rgb_expands_gray_drops_alpha_and_reduces_16_bit(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "g.png"), np.full((3, 3), 77, np.uint8))
    assert read_rgb(tmp_path / "g.png")[1, 1].tolist() == [77, 77, 77]
    cv2.imwrite(str(tmp_path / "a.png"), np.full((3, 3, 4), 9, np.uint8))
    assert read_rgb(tmp_path / "a.png").shape == (3, 3, 3)
    cv2.imwrite(str(tmp_path / "w.png"), np.full((3, 3, 3), 65535, np.uint16))
    deep = read_rgb(tmp_path / "w.png")
    assert deep.dtype == np.uint8 and deep.max() == 255


@pytest.mark.parametrize(
    ("content", "reason"), [(b"", "empty"), (b"not an image at all", "not a readable image")]
)
def test_bad_files_name_the_file_and_the_problem(tmp_path: Path, content: bytes, reason: str):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason) as error:
        read_rgb(path)
    assert "broken.png" in str(error.value)


def test_split_is_seeded_disjoint_and_complete(tmp_path: Path):
    files = [tmp_path / f"{i}.png" for i in range(10)]
    train = split_files(files, "train", 3, seed=0)
    val = split_files(files, "val", 3, seed=0)
    assert len(val) == 3 and set(train) | set(val) == set(files) and not set(train) & set(val)
    assert val == split_files(files, "val", 3, seed=0)
    assert val != split_files(files, "val", 3, seed=1)


def test_missing_folder_says_where_images_belong(tmp_path: Path):
    source = FolderImages(root=str(tmp_path / "nowhere" / "HR"), name="Urban100")
    with pytest.raises(DatasetNotFoundError, match=r"Urban100 images not found.*nowhere"):
        source.load()


def test_bad_image_is_skipped_with_a_warning_when_asked(tmp_path: Path):
    write_folder(tmp_path, 2)
    (tmp_path / "zero.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"zero\.png"):
        FolderImages(root=str(tmp_path)).load()
    with pytest.warns(UserWarning, match=r"zero\.png"):
        images = FolderImages(root=str(tmp_path), on_bad_image="skip").load()
    assert len(images) == 2


def test_sample_images_ship_with_scikit_image():
    images = SkimageImages(names=["chelsea", "stereo_motorcycle"]).load()
    assert [i.pixels.shape for i in images] == [(300, 451, 3), (500, 741, 3)]


def test_bicubic_pairs_are_mod_cropped_and_matlab_downscaled():
    image = NamedImage("x", photo(0, 65, 83))
    (pair,) = make_pairs([image], "set", 4, BicubicDegradation(), seed=0)
    assert pair.hr.shape == (64, 80, 3)
    assert pair.lr is not None and np.array_equal(pair.lr, imresize_uint8(pair.hr, 0.25))


def test_patches_are_aligned_deterministic_and_augmented_alike():
    pairs = make_pairs([NamedImage("x", photo(1, 96, 128))], "s", 2, BicubicDegradation(), 0)
    data = PatchDataset(pairs, 2, 8, BicubicDegradation(), length=50, seed=3, augment=False)
    item = data[7]
    assert item["lr"].shape == (3, 8, 8) and item["hr"].shape == (3, 16, 16)
    assert torch.equal(item["hr"], data[7]["hr"]) and not torch.equal(item["hr"], data[8]["hr"])
    # The LR patch is the matching window of the whole image's LR: find it and compare.
    hr = (item["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    match = cv2.matchTemplate(pairs[0].hr, hr, cv2.TM_SQDIFF)
    top, left = np.unravel_index(np.argmin(match), match.shape)
    assert top % 2 == 0 and left % 2 == 0
    lr_window = pairs[0].lr[top // 2 : top // 2 + 8, left // 2 : left // 2 + 8]
    assert np.array_equal((item["lr"].permute(1, 2, 0).numpy() * 255).round(), lr_window)
    augmented = PatchDataset(pairs, 2, 8, BicubicDegradation(), length=50, seed=3, augment=True)
    assert {tuple(augmented[i]["lr"].shape) for i in range(20)} == {(3, 8, 8)}


def test_d4_transform_has_eight_distinct_results():
    image = np.arange(12).reshape(3, 4, 1)
    results = {
        d4_transform(image, k).tobytes() + bytes(d4_transform(image, k).shape) for k in range(8)
    }
    assert len(results) == 8


def test_too_small_images_are_refused_by_name():
    pairs = make_pairs([NamedImage("tiny", photo(0, 16, 16))], "s", 2, BicubicDegradation(), 0)
    with pytest.raises(ValueError, match="tiny"):
        PatchDataset(pairs, 2, 48, BicubicDegradation(), length=4, seed=0)


def test_realistic_degradation_is_seeded_and_shaped():
    import albumentations as A

    degrade = AlbumentationsDegradation(
        before=[A.GaussianBlur(blur_limit=(3, 5), p=1.0)],
        after=[A.GaussNoise(std_range=(0.05, 0.1), p=1.0)],
    )
    hr = photo(2, 64, 64)
    one = degrade(hr, 4, np.random.default_rng(5))
    again = degrade(hr, 4, np.random.default_rng(5))
    other = degrade(hr, 4, np.random.default_rng(6))
    assert one.shape == (16, 16, 3) and one.dtype == np.uint8
    assert np.array_equal(one, again) and not np.array_equal(one, other)
    assert not np.array_equal(one, imresize_uint8(hr, 0.25))


def test_datamodule_sizes_the_run_from_max_steps(tmp_path: Path):
    write_folder(tmp_path / "hr", 4, height=64, width=64)
    source = FolderImages(root=str(tmp_path / "hr"), split="train", val_count=1)
    val = FolderImages(root=str(tmp_path / "hr"), split="val", val_count=1)
    datamodule = SRDataModule(2, [val], source, lr_patch_size=8, batch_size=4, num_patches=40)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["lr"].shape == (4, 3, 8, 8) and len(datamodule.train_dataloader()) == 10
    val_batch = next(iter(datamodule.val_dataloader()))
    assert val_batch["hr"].shape == (1, 3, 64, 64) and val_batch["lr"].shape == (1, 3, 32, 32)
    assert isinstance(datamodule.val_data, ValidationImages)


def test_validation_read_on_demand_equals_decoded_up_front(tmp_path: Path):
    from src.data.benchmarks import BenchmarkSet
    from src.data.synthetic import BicubicNoiseDegradation

    write_folder(tmp_path / "benchmarks" / "Mini" / "HR", 3, height=40, width=52)
    val = [
        BenchmarkSet("Mini", str(tmp_path / "benchmarks"), scale=2),
        SkimageImages(names=["chelsea"], name="photo"),
    ]
    batches = {}
    for workers in (0, 1):
        # A random degradation: its draws must be those of the same image either way.
        datamodule = SRDataModule(
            2, val, degradation=BicubicNoiseDegradation(), val_workers=workers
        )
        datamodule.setup("validate")
        assert (datamodule.val_data.items is None) == (workers == 0)
        batches[workers] = list(datamodule.val_dataloader())
    assert len(batches[0]) == len(batches[1]) == 4
    for eager, lazy in zip(batches[0], batches[1], strict=True):
        assert (eager["set"], eager["name"]) == (lazy["set"], lazy["name"])
        assert torch.equal(eager["lr"], lazy["lr"]) and torch.equal(eager["hr"], lazy["hr"])
        assert int(eager["index"]) == int(lazy["index"])


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_an_unreadable_image_read_on_demand_follows_on_bad_image(tmp_path: Path, policy: str):
    folder = tmp_path / "val"
    write_folder(folder, 2, height=32, width=32)
    (folder / "img_000_broken.png").write_bytes(b"not a png")
    source = FolderImages(root=str(folder), name="val", on_bad_image=policy)
    datamodule = SRDataModule(2, [source], val_workers=1, on_bad_image=policy)
    datamodule.setup("validate")
    batches = list(datamodule.val_dataloader())
    assert len(batches) == 3
    broken = next(batch for batch in batches if "error" in batch)
    if policy == "error":
        with pytest.raises(ImageReadError, match=r"img_000_broken\.png: not a readable image"):
            datamodule.on_before_batch_transfer(broken, 0)
    else:
        with pytest.warns(UserWarning, match="skipped unreadable image.*img_000_broken"):
            left = datamodule.on_before_batch_transfer(broken, 0)
        assert "lr" not in left  # not scored
