"""Training sets at scale: configs, given LR/HR pairs, downloads without checksums, bad data."""

from __future__ import annotations

from pathlib import Path

import cv2
import hydra
import numpy as np
import pytest
import torch

from src.data.benchmarks import BenchmarkSet, benchmark_sets
from src.data.checks import fit_patches
from src.data.datamodule import SRDataModule
from src.data.paired import PairedFolderImages
from src.data.sources import ConcatImages, DatasetNotFoundError, FolderImages
from src.io.images import ImageReadError, NamedImage
from src.ops.imresize import modcrop
from tests.helpers import TINY, compose_config
from tests.test_data import photo, write_folder

NEW_TRAINING_CONFIGS = ["t91", "bsd200", "div2k", "flickr2k", "df2k", "paired"]
PAIRED_ROOTS = ["data.hr_root=/some/hr", "data.lr_root=/some/lr"]


def png_bytes(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def corrupt(data: bytes) -> bytes:
    """The same PNG with bytes in the middle of its pixel data overwritten (CRC mismatch)."""
    middle = len(data) // 2
    return data[:middle] + bytes(64) + data[middle + 64 :]


BAD_FILES = {
    "zero-byte": (lambda: b"", "empty"),
    "truncated": (lambda: png_bytes(photo(5))[:-300], "not a readable image"),
    "corrupt": (lambda: corrupt(png_bytes(photo(6))), "not a readable image"),
    "not-an-image": (lambda: b"hello, I am a text file", "not a readable image"),
}


def source_on(folder: Path, on_bad_image: str = "error") -> FolderImages:
    return FolderImages(root=str(folder), name="mine", on_bad_image=on_bad_image)  # type: ignore[arg-type]


# --- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_is_an_error_naming_it_or_skipped_with_a_warning(tmp_path: Path, kind: str):
    write_folder(tmp_path, 2)
    content, reason = BAD_FILES[kind]
    (tmp_path / f"{kind}.png").write_bytes(content())
    with pytest.raises(ImageReadError, match=reason) as error:
        source_on(tmp_path).load()
    assert f"{kind}.png" in str(error.value)
    with pytest.warns(UserWarning, match=rf"(?s)skipped 1 unreadable.*{kind}\.png"):
        images = source_on(tmp_path, "skip").load()
    assert sorted(image.name for image in images) == ["img_001", "img_002"]


def test_deep_transparent_and_gray_images_load_as_8_bit_rgb(tmp_path: Path):
    cv2.imwrite(str(tmp_path / "deep.png"), photo(0).astype(np.uint16) * 257)
    rgba = np.dstack([photo(1), np.full(photo(1).shape[:2], 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    cv2.imwrite(str(tmp_path / "gray.png"), photo(2)[:, :, 0])
    images = {image.name: image for image in source_on(tmp_path).load()}
    assert {name: image.pixels.shape for name, image in images.items()} == {
        name: (64, 80, 3) for name in ("deep", "gray", "rgba")
    }
    assert all(image.pixels.dtype == np.uint8 for image in images.values())
    assert np.array_equal(images["deep"].pixels, photo(0)[:, :, ::-1])  # 257 * v -> v exactly
    assert np.array_equal(images["rgba"].pixels, photo(1)[:, :, ::-1])
    assert images["gray"].gray and not images["rgba"].gray
    assert images["gray"].path.endswith("gray.png")


def test_empty_folder_is_named(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("not an image: ignored")
    with pytest.raises(DatasetNotFoundError, match=rf"no image files in {tmp_path}"):
        source_on(tmp_path).load()
    (tmp_path / "lr").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no image files"):
        PairedFolderImages(str(tmp_path), str(tmp_path / "lr"), scale=2).load()


def small_image_module(folder: Path, on_bad_image: str) -> SRDataModule:
    write_folder(folder, 3, height=64, width=64)
    cv2.imwrite(str(folder / "small.png"), photo(9, 40, 56))
    train = FolderImages(root=str(folder), name="mine", on_bad_image=on_bad_image)  # type: ignore[arg-type]
    return SRDataModule(
        2,
        [FolderImages(root=str(folder), name="val")],
        train,
        lr_patch_size=24,
        batch_size=2,
        num_patches=4,
        on_bad_image=on_bad_image,  # type: ignore[arg-type]
    )


def test_images_smaller_than_the_patch_are_named_at_setup(tmp_path: Path):
    module = small_image_module(tmp_path, "error")
    with pytest.raises(ImageReadError, match=r"smaller than the HR patch of 48x48") as error:
        module.setup("fit")
    message = str(error.value)
    assert f"{tmp_path / 'small.png'} (56x40)" in message and "img_001" not in message
    assert "data.lr_patch_size" in message and "data.on_bad_image=skip" in message


def test_images_smaller_than_the_patch_are_skipped_when_asked(tmp_path: Path):
    module = small_image_module(tmp_path, "skip")
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 image\(s\) of mine smaller.*small\.png"):
        module.setup("fit")
    assert module.train_data is not None
    assert sorted(pair.name for pair in module.train_data.pairs) == [
        "img_001",
        "img_002",
        "img_003",
    ]
    assert next(iter(module.train_dataloader()))["hr"].shape == (2, 3, 48, 48)


def test_no_image_large_enough_is_an_error_even_when_skipping(tmp_path: Path):
    write_folder(tmp_path, 2, height=32, width=32)
    source = FolderImages(root=str(tmp_path))
    module = SRDataModule(2, [source], source, lr_patch_size=24, on_bad_image="skip")
    with pytest.warns(UserWarning), pytest.raises(DatasetNotFoundError, match="large enough"):
        module.setup("fit")


# --- given LR/HR pairs -----------------------------------------------------------------------


def write_pairs(root: Path, scale: int, count: int = 4, lr_name: str = "{stem}x{s}") -> Path:
    """HR images (not multiples of the scale) and unrelated noise LR images of the right size."""
    (root / "hr").mkdir(parents=True)
    (root / "lr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        stem = f"pic{i}"
        hr = photo(i, 50 + 2 * i, 61)
        height, width = (side // scale for side in hr.shape[:2])
        lr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "hr" / f"{stem}.png"), hr)
        cv2.imwrite(str(root / "lr" / f"{lr_name.format(stem=stem, s=scale)}.png"), lr)
    return root


@pytest.mark.parametrize("lr_name", ["{stem}x{s}", "{stem}"])
def test_pairs_are_matched_by_name_and_keep_the_given_lr(tmp_path: Path, lr_name: str):
    root = write_pairs(tmp_path, 3, lr_name=lr_name)
    images = PairedFolderImages(str(root / "hr"), str(root / "lr"), scale=3).load()
    assert [image.name for image in images] == ["pic0", "pic1", "pic2", "pic3"]
    for image in images:
        assert image.lr is not None
        stored = cv2.imread(str(root / "lr" / f"{lr_name.format(stem=image.name, s=3)}.png"))
        assert np.array_equal(image.lr, stored[:, :, ::-1])
        height, width = modcrop(image.pixels, 3).shape[:2]
        assert image.lr.shape == (height // 3, width // 3, 3)


def test_pair_whose_sizes_disagree_names_both_files(tmp_path: Path):
    root = write_pairs(tmp_path, 2)
    cv2.imwrite(str(root / "lr" / "pic1x2.png"), np.zeros((20, 20, 3), np.uint8))
    source = PairedFolderImages(str(root / "hr"), str(root / "lr"), scale=2)
    with pytest.raises(ImageReadError, match="do not agree with scale x2") as error:
        source.load()
    message = str(error.value)
    assert str(root / "hr" / "pic1.png") in message and str(root / "lr" / "pic1x2.png") in message
    assert "needs an LR of 30x26" in message  # 61x52 HR -> 60x52 mod-cropped -> 30x26
    source.on_bad_image = "skip"
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 unusable LR/HR pair.*pic1x2\.png"):
        assert [image.name for image in source.load()] == ["pic0", "pic2", "pic3"]


def test_hr_without_lr_is_named(tmp_path: Path):
    root = write_pairs(tmp_path, 2)
    (root / "lr" / "pic2x2.png").unlink()
    with pytest.raises(ImageReadError, match=r"(?s)pic2\.png: no LR image.*pic2x2\.\* or pic2\.\*"):
        PairedFolderImages(str(root / "hr"), str(root / "lr"), scale=2).load()


def test_paired_config_trains_on_aligned_given_patches_and_validates_on_given_pairs(
    tmp_path: Path,
):
    root = write_pairs(tmp_path / "set", 2, count=5)
    overrides = [
        "data=paired",
        f"data.hr_root={root / 'hr'}",
        f"data.lr_root={root / 'lr'}",
        "scale=2",
        "data.lr_patch_size=8",
        "data.num_patches=8",
        "data.augment=false",
        f"paths.data_dir={tmp_path / 'nowhere'}",  # no benchmark set is needed by default
    ]
    datamodule: SRDataModule = hydra.utils.instantiate(
        compose_config("train", overrides, tmp_path).data
    )
    datamodule.setup("fit")
    assert datamodule.val_set_names == ["paired_val"]
    assert datamodule.train_data is not None and len(datamodule.train_data.pairs) == 3
    # Noise LR cannot come from any degradation of the HR: finding it proves the pair is used.
    for index in range(4):
        item = datamodule.train_data[index]
        pair = next(p for p in datamodule.train_data.pairs if p.name == item["name"])
        lr = (item["lr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        hr = (item["hr"].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        match = cv2.matchTemplate(pair.lr, lr, cv2.TM_SQDIFF)
        top, left = np.unravel_index(np.argmin(match), match.shape)
        assert match.min() == 0
        assert np.array_equal(hr, pair.hr[top * 2 : top * 2 + 16, left * 2 : left * 2 + 16])
    val = list(datamodule.val_dataloader())
    assert len(val) == 2
    for batch in val:
        stored = cv2.imread(str(root / "lr" / f"{batch['name'][0]}x2.png"))[:, :, ::-1]
        lr = (batch["lr"][0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(lr, stored)


# --- downloads without a checksum ------------------------------------------------------------


@pytest.fixture
def no_fetch(monkeypatch):
    """Record calls to fetch instead of touching the network."""
    calls = []
    monkeypatch.setattr("src.io.download.fetch", lambda *args, **kw: calls.append(args))
    return calls


ARCHIVE = {"url": "https://example.org/Set.zip", "size": None, "subdir": "Set/HR"}


def test_download_without_sha256_is_refused_with_the_key_to_set(tmp_path: Path, no_fetch):
    source = FolderImages(
        root=str(tmp_path / "Set" / "HR"), name="Set", download={**ARCHIVE, "sha256": None}
    )
    with pytest.raises(DatasetNotFoundError) as error:
        source.load()
    message = str(error.value)
    assert "https://example.org/Set.zip" in message and "no sha256" in message
    assert "set data.train_set.download.sha256=<hex> to verify the archive" in message
    assert not no_fetch


def test_download_with_sha256_is_fetched_as_a_remote_archive(tmp_path: Path, no_fetch):
    digest = "ab" * 32
    root = tmp_path / "Set" / "HR"
    source = FolderImages(root=str(root), name="Set", download={**ARCHIVE, "sha256": digest})
    with pytest.raises(FileNotFoundError):  # the fake fetch put nothing there
        source.load()
    ((archive, cache, target),) = no_fetch
    assert (archive.url, archive.sha256, archive.subdir) == (ARCHIVE["url"], digest, "Set/HR")
    assert target == root and cache == root.parent / ".downloads"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ("flickr2k", "data.train_set.download.sha256"),
        ("df2k", "data.train_set.sources.1.download.sha256"),
    ],
)
def test_flickr2k_has_no_checksum_so_it_is_not_downloaded(
    tmp_path: Path, no_fetch, data: str, key: str
):
    cfg = compose_config("train", [f"data={data}", f"paths.data_dir={tmp_path}"], tmp_path)
    train_set = hydra.utils.instantiate(cfg.data.train_set, _convert_="partial")
    flickr = train_set.sources[1] if data == "df2k" else train_set
    with pytest.raises(DatasetNotFoundError, match=rf"set {key.replace('.', '[.]')}=<hex>"):
        flickr.load()
    assert not no_fetch


def test_df2k_downloads_agree_with_div2k_and_flickr2k(tmp_path: Path):
    def train_set(data: str):
        return compose_config("train", [f"data={data}"], tmp_path).data.train_set

    df2k = train_set("df2k")
    assert df2k.sources[0].download == train_set("div2k").download
    assert df2k.sources[1].download == train_set("flickr2k").download
    assert df2k.sources[0].root == train_set("div2k").root
    assert df2k.sources[1].root == train_set("flickr2k").root


# --- configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", NEW_TRAINING_CONFIGS)
def test_on_bad_image_reaches_every_source(tmp_path: Path, data: str):
    extra = PAIRED_ROOTS if data == "paired" else []
    cfg = compose_config(
        "train", [f"data={data}", "data.on_bad_image=skip", "data.sets=[Set5]", *extra], tmp_path
    )
    datamodule = hydra.utils.instantiate(cfg.data)
    train = datamodule.train_set
    sources = [*getattr(train, "sources", [train]), *datamodule.val_sets]
    assert [source.on_bad_image for source in sources] == ["skip"] * len(sources)
    assert datamodule.on_bad_image == "skip" and datamodule.val_set_names == ["Set5"]


def test_div2k_validates_on_its_own_valid_set_when_listed(tmp_path: Path):
    cfg = compose_config("train", ["data=div2k", "data.sets=[Set14,DIV2K_valid]"], tmp_path)
    val_sets = hydra.utils.instantiate(cfg.data).val_sets
    assert [type(source) for source in val_sets] == [BenchmarkSet, FolderImages]
    assert val_sets[1].root.endswith("DIV2K/DIV2K_valid_HR")
    assert val_sets[1].download["sha256"] and val_sets[1].download["subdir"] == "DIV2K_valid_HR"


def test_benchmark_sets_take_named_sources_from_others(tmp_path: Path):
    mine = FolderImages(root=str(tmp_path), name="mine")
    sets = benchmark_sets(
        str(tmp_path), ["Set5", "mine"], 2, on_bad_image="skip", others={"mine": mine}
    )
    assert isinstance(sets[0], BenchmarkSet) and sets[0].on_bad_image == "skip"
    assert sets[1] is mine


def test_concatenated_sources_load_in_order(tmp_path: Path):
    write_folder(tmp_path / "a", 2)
    write_folder(tmp_path / "b", 1)
    both = ConcatImages([FolderImages(str(tmp_path / "a")), FolderImages(str(tmp_path / "b"))])
    assert both.name == "a+b" and len(both.load()) == 3


# --- T91 and BSD200 from ../shared -----------------------------------------------------------


@pytest.mark.shared
def test_t91_patch_size_fits_every_image_and_larger_ones_name_the_small_image(
    shared_data: Path, tmp_path: Path
):
    cfg = compose_config("train", ["data=t91", f"paths.data_dir={shared_data}"], tmp_path)
    assert cfg.data.lr_patch_size == 16
    images = hydra.utils.instantiate(cfg.data.train_set).load()
    assert len(images) == 91
    assert len(fit_patches(images, "T91", 4, 16, "error")) == 91
    with pytest.raises(ImageReadError, match=r"(?s)1 image\(s\) of T91 smaller.*T91/t\d+\.png"):
        fit_patches(images, "T91", 4, 24, "error")
    with pytest.warns(UserWarning, match=r"(?s)skipped 1 image.*T91/t\d+\.png \(\d+x78\)"):
        assert len(fit_patches(images, "T91", 4, 24, "skip")) == 90


@pytest.mark.shared
def test_t91_trains_and_validates_on_set5(shared_data: Path, tmp_path: Path):
    from src.train import train

    overrides = [
        *TINY,
        "data=t91",
        f"paths.data_dir={shared_data}",
        "model=edsr",
        "scale=4",
        "trainer.max_steps=2",
        "callbacks=none",
    ]
    # One thread: the MATLAB resize of 91 small images at set-up slows down badly when torch's
    # two threads share the cores with anything else.
    torch.set_num_threads(1)
    metrics = train(compose_config("train", overrides, tmp_path))
    assert "val/psnr_y" in metrics and np.isfinite(metrics["val/psnr_y"])


@pytest.mark.shared
def test_bsd200_builds_from_shared_data(shared_data: Path, tmp_path: Path):
    overrides = ["data=bsd200", f"paths.data_dir={shared_data}", "scale=4"]
    datamodule = hydra.utils.instantiate(compose_config("train", overrides, tmp_path).data)
    images = datamodule.train_set.load()
    assert len(images) == 200 and min(min(i.pixels.shape[:2]) for i in images) >= 4 * 48
    assert isinstance(images[0], NamedImage)
