"""ONNX export of video networks: clips (N, T, C, H, W) in with T fixed (``frames``), N, H and W
dynamic; metadata that says how the file uses time; onnxruntime against PyTorch on clips; the
fixed-T chunking src.eval and src.predict run such a file with; one ``error:`` line for what
cannot be exported.

Fast tests use two tiny video networks defined here (a recurrent one and a window one); the
slow ones export small configurations of BasicVSR, IconVSR, BasicVSR++, EDVR-M and RealBasicVSR
(a full-size SPyNet each, minutes on a CPU).
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.archs.base import NetworkTraits, SRNetwork, frames_of
from src.archs.realbasicvsr import RealBasicVSR
from src.io.images import write_image
from src.io.media import read_image
from src.io.predict_io import quantize
from src.models.checkpoint import CheckpointError
from src.models.exporting import (
    DEFAULT_CLIP_FRAMES,
    ExportError,
    clip_shape,
    export_onnx,
    export_verified_onnx,
)
from src.models.onnx_runtime import OnnxGraph, OnnxNetwork
from src.models.sr_module import SRModule
from src.ops.video_inference import (
    ClipInference,
    ShortClipError,
    stream_fixed_frames,
    upscale_clip,
)
from src.utils.choices import SEQUENCE, WINDOW
from tests.helpers import SMALL_CLIPS, one_error_line, run_in_process

NetworkT = TypeVar("NetworkT", bound=nn.Module)

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


class TinyRecurrent(SRNetwork):
    """A recurrent clip network x2: frame t's output depends on every frame up to t, so a chunk
    boundary changes it and a test can tell the chunks apart."""

    traits = NetworkTraits(scales=(2,), channels=(3,), frames=SEQUENCE)
    image_channels = 3  # RGB frames (its first convolution also reads the state)
    # Set by a test to run it as a fixed-T ONNX file is run (OnnxGraph declares it so).
    fixed_frames: int | None = None

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        state = torch.zeros_like(clip[:, 0])
        outputs = []
        for t in range(clip.shape[1]):
            state = torch.tanh(self.conv(torch.cat((clip[:, t], state), dim=1)))
            outputs.append(F.interpolate(clip[:, t] + state, scale_factor=2, mode="nearest"))
        return torch.stack(outputs, dim=1)


class TinyWindow(SRNetwork):
    """A window network x2: three frames in, the output of frame 1 (its centre) out."""

    traits = NetworkTraits(scales=(2,), channels=(3,), frames=WINDOW, window=3)
    image_channels = 3  # RGB frames (its first convolution reads the whole window)

    def __init__(self) -> None:
        super().__init__()
        self.num_frames = 3
        self.center_frame = 1
        self.conv = nn.Conv2d(9, 3, 3, padding=1)

    def forward(self, window: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = window.shape
        mixed = self.conv(window.reshape(n, t * c, h, w)) + window[:, 1]
        return F.interpolate(mixed, scale_factor=2, mode="nearest")


class AtLeastNine(TinyRecurrent):
    """Declares its shortest clip, as IconVSR does (one keyframe window)."""

    min_frames = 9


class DependsOnPixels(TinyRecurrent):
    """Branches in Python on a pixel value: no graph can hold that without torch.cond."""

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        out = super().forward(clip)
        return out * 2 if clip.mean() > 0.5 else out


def module_of(net: nn.Module) -> SRModule:
    torch.manual_seed(0)
    return SRModule(net, scale=2).eval()


@pytest.fixture(scope="module")
def recurrent_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[SRModule, Path, float]:
    """TinyRecurrent exported for clips of 4 frames, checked by onnxruntime."""
    torch.manual_seed(0)
    module = module_of(TinyRecurrent())
    path = tmp_path_factory.mktemp("recurrent") / "recurrent.onnx"
    worst = export_verified_onnx(module, path, sample_size=16, frames=4)
    return module, path, worst


@pytest.fixture(scope="module")
def window_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[SRModule, Path]:
    module = module_of(TinyWindow())
    path = tmp_path_factory.mktemp("window") / "window.onnx"
    export_onnx(module, path, sample_size=16)
    return module, path


# --- the file and its metadata -------------------------------------------------------------------
def test_a_recurrent_file_takes_clips_of_its_fixed_length_and_says_so(recurrent_file):
    module, path, worst = recurrent_file
    assert worst < 1e-5
    network = OnnxNetwork(path)
    meta = network.metadata
    assert (meta["srlab.frames"], meta["srlab.num_frames"]) == ("sequence", "4")
    assert (network.frames, network.num_frames, network.scale, network.channels) == (
        SEQUENCE,
        4,
        2,
        3,
    )
    for shape in [(1, 4, 3, 20, 28), (2, 4, 3, 13, 9)]:  # batch, height and width are free
        lr = torch.rand(shape)
        with torch.no_grad():
            expected = module.run_net(lr, module.net)
        got = network(lr)
        assert got.shape == (shape[0], 4, 3, 2 * shape[3], 2 * shape[4])
        assert float((got - expected).abs().max()) < 1e-5


def test_a_clip_of_another_length_is_refused_naming_the_files_length(recurrent_file):
    network = OnnxNetwork(recurrent_file[1])
    with pytest.raises(CheckpointError, match=r"exactly 4 frames.*got 5"):
        network(torch.rand(1, 5, 3, 8, 8))


def test_a_window_file_takes_its_window_and_restores_its_centre(window_file):
    module, path = window_file
    network = OnnxNetwork(path)
    assert (network.frames, network.num_frames, network.window_position) == (WINDOW, 3, 1)
    lr = torch.rand(2, 3, 3, 11, 15)
    with torch.no_grad():
        expected = module.net(lr)
    got = network(lr)
    assert got.shape == (2, 3, 22, 30)
    assert float((got - expected).abs().max()) < 1e-5
    graph = OnnxGraph(network)
    assert frames_of(graph) == (WINDOW, 3, 1)


def test_the_clip_length_follows_frames_min_frames_and_the_window():
    recurrent = TinyRecurrent()
    assert clip_shape(recurrent).frames == DEFAULT_CLIP_FRAMES  # type: ignore[union-attr]
    assert clip_shape(recurrent, 2).frames == 2  # type: ignore[union-attr]
    nine = AtLeastNine()
    assert clip_shape(nine).frames == 9  # type: ignore[union-attr]
    with pytest.raises(ExportError, match="frames=5: AtLeastNine takes clips of at least 9"):
        clip_shape(nine, 5)
    window = clip_shape(TinyWindow())
    assert window is not None and (window.kind, window.frames, window.position) == (WINDOW, 3, 1)
    with pytest.raises(ExportError, match="windows of exactly 3 frames"):
        clip_shape(TinyWindow(), 4)


def test_an_export_that_branches_on_pixels_fails_in_one_line_naming_the_cause(tmp_path: Path):
    with pytest.raises(ExportError) as caught:
        export_onnx(module_of(DependsOnPixels()), tmp_path / "x.onnx", sample_size=8, frames=2)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("ONNX export of DependsOnPixels failed:")
    assert "clips (N, 2, C, H, W)" in message and "torch.cond" in message
    assert not (tmp_path / "x.onnx").exists()


# --- running a fixed-T file: chunks of exactly T frames -----------------------------------------
class Recording(TinyRecurrent):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        self.calls.append(clip.shape[1])
        return super().forward(clip)


def expected_fixed(net: nn.Module, clip: torch.Tensor, frames: int, overlap: int) -> torch.Tensor:
    """The rule written out: the core of frames s .. s + keep - 1 (keep = T - 2 context) taken
    from the call on frames w .. w + T - 1, w = min(max(s - context, 0), total - T)."""
    total = clip.shape[1]
    context = min(overlap, (frames - 1) // 2)
    keep = frames - 2 * context
    out = []
    for start in range(0, total, keep):
        first = min(max(start - context, 0), total - frames)
        sr = net(clip[:, first : first + frames])
        out += [sr[:, i - first] for i in range(start, min(start + keep, total))]
    return torch.stack(out, dim=1)


@pytest.mark.parametrize(
    ("total", "frames", "overlap"), [(11, 5, 1), (7, 7, 2), (10, 4, 3), (9, 6, 0)]
)
def test_fixed_frames_calls_take_exactly_t_frames_and_keep_each_frame_once(
    total: int, frames: int, overlap: int
):
    torch.manual_seed(0)
    net = Recording().eval()
    clip = torch.rand(1, total, 3, 6, 6)
    settings = ClipInference(frames=SEQUENCE, clip_overlap=overlap, fixed_frames=frames)
    with torch.no_grad():
        whole = upscale_clip(net, clip, 2, settings)
        streamed = torch.stack(list(stream_fixed_frames(clip.unbind(1), net, 2, settings)), 1)
        expected = expected_fixed(net, clip, frames, overlap)
    assert set(net.calls) == {frames}
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(streamed, expected)


def test_streaming_fixed_frames_holds_at_most_t_plus_one_frames():
    """Frames made as they are read and their lives counted: at every output at most T + 1
    input frames are alive (T = 7, 1 frame of context a side, 5 kept a call)."""
    made, freed = [0], [0]

    def frames(total: int) -> Iterator[torch.Tensor]:
        for _ in range(total):
            frame = torch.rand(1, 3, 4, 4)
            made[0] += 1
            weakref.finalize(frame, lambda: freed.__setitem__(0, freed[0] + 1))
            yield frame

    held = []
    settings = ClipInference(frames=SEQUENCE, clip_overlap=1, fixed_frames=7)
    with torch.no_grad():
        for _ in stream_fixed_frames(frames(23), TinyRecurrent(), 2, settings):
            held.append(made[0] - freed[0])
    assert len(held) == 23 and max(held) <= 8, held


def test_a_clip_shorter_than_the_files_length_is_refused_naming_frames():
    settings = ClipInference(frames=SEQUENCE, fixed_frames=7)
    with pytest.raises(ShortClipError, match=r"clip of 5 frames is shorter than the 7.*frames=5"):
        upscale_clip(TinyRecurrent(), torch.rand(1, 5, 3, 4, 4), 2, settings)


def test_the_onnx_module_runs_clips_as_the_torch_module_with_the_same_chunks(recurrent_file):
    """An SRModule around the file (src.eval's, src.predict's) gives the torch network's output
    under the same fixed-T chunking, tiles included."""
    module, path, _ = recurrent_file
    onnx_module = SRModule(OnnxGraph(OnnxNetwork(path)), 2, value_range=1.0, clip_overlap=1)
    torch_net = TinyRecurrent()
    torch_net.load_state_dict(module.net.state_dict())
    torch_net.fixed_frames = 4
    torch_module = SRModule(torch_net, 2, clip_overlap=1).eval()
    clip = torch.rand(1, 9, 3, 12, 10)
    with torch.no_grad():
        expected = torch_module(clip)
        for tile in (None, 8):
            onnx_module.tile = torch_module.tile = tile
            got = onnx_module(clip)
            torch.testing.assert_close(got, torch_module(clip), atol=1e-5, rtol=0)
    whole = module(clip)
    assert float((expected - whole).abs().max()) > 1e-3  # the chunks are not the whole clip


def predict_frame_folder(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: SRModule
) -> str:
    """src.predict of ``path`` on a folder of 6 frames; each written frame is checked against
    ``reference`` (a torch module) on the same clip, to one 8-bit level. Returns stdout."""
    folder = tmp_path / "walk"
    folder.mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for _ in range(6)]
    names = [f"f{i}.png" for i in range(6)]
    for name, frame in zip(names, frames, strict=True):
        write_image(folder / name, frame)
    options = ["progress=false", "clip_overlap=1"]
    outcome = run_in_process(
        "predict",
        [f"onnx_path={path}", f"input={folder}", f"output={tmp_path / 'out'}", *options],
        tmp_path,
        capsys,
    )
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    lr = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames])
    with torch.no_grad():
        sr = reference(lr[None])[0].clamp(0, 1)
    for name, expected in zip(names, sr, strict=True):
        written = read_image(tmp_path / "out" / "walk" / name).astype(int)
        level = quantize(expected.permute(1, 2, 0).numpy(), np.dtype(np.uint8)).astype(int)
        assert np.abs(written - level).max() <= 1
    return outcome.stdout


def test_predict_streams_a_frame_folder_through_a_recurrent_file(
    recurrent_file, tmp_path: Path, capsys
):
    module, path, _ = recurrent_file
    net = TinyRecurrent()
    net.load_state_dict(module.net.state_dict())
    net.fixed_frames = 4
    reference = SRModule(net, 2, clip_overlap=1).eval()
    stdout = predict_frame_folder(path, tmp_path, capsys, reference)
    assert "calls of exactly 4 frames (the ONNX file's), 2 kept of each" in stdout


def test_predict_reports_a_clip_shorter_than_the_file_and_goes_on(
    recurrent_file, tmp_path: Path, capsys
):
    short, full = tmp_path / "in" / "short", tmp_path / "in" / "full"
    for folder, count in ((short, 3), (full, 4)):
        folder.mkdir(parents=True)
        for index in range(count):
            write_image(folder / f"f{index}.png", np.full((8, 8, 3), 40 * index, np.uint8))
    outcome = run_in_process(
        "predict",
        [
            f"onnx_path={recurrent_file[1]}",
            f"input={tmp_path / 'in'}",
            f"output={tmp_path / 'o'}",
            "progress=false",
        ],
        tmp_path,
        capsys,
    )
    assert outcome.returncode == 1, outcome.stderr[-2000:]
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error:")]
    assert errors[0].startswith(f"error: {short}: a clip of 3 frames is shorter than the 4 frames")
    assert errors[1:] == ["error: 1 input(s) failed: short"]
    assert len(list((tmp_path / "o" / "full").iterdir())) == 4


def test_predict_runs_a_window_file_on_each_frames_window(window_file, tmp_path: Path, capsys):
    module, path = window_file
    predict_frame_folder(path, tmp_path, capsys, module)  # reflection_circle at both ends


def test_eval_scores_video_sets_through_the_file(tmp_path: Path, capsys):
    """src.eval onnx_path=<video file> on synthetic clips of 3 frames: per-frame and per-clip
    rows, as with a checkpoint."""
    path = tmp_path / "recurrent3.onnx"
    export_onnx(module_of(TinyRecurrent()), path, sample_size=16, frames=3)
    outcome = run_in_process(
        "eval", [f"onnx_path={path}", *SMALL_CLIPS, "comparisons=0", "metrics=[]"], tmp_path, capsys
    )
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    results = json.loads(next((tmp_path / "run").rglob("results.json")).read_text())
    assert "recurrent3.onnx (onnxruntime) x2, 6 frames in" in outcome.stdout
    assert [clip["frames"] for clip in results["clips"]] == [3, 3]
    assert all(np.isfinite(clip["psnr_y"]) for clip in results["clips"])
    assert len(results["images"]) == 6 and all("clip" in row for row in results["images"])


# --- what is refused, in one line ----------------------------------------------------------------
TINY_VIDEO = {
    "basicvsr": ["model=basicvsr", "model.net.num_features=8", "model.net.num_blocks=1"],
    "iconvsr": ["model=iconvsr", "model.net.num_features=8", "model.net.num_blocks=1"],
    "edvr": [
        "model=edvr_m",
        "model.net.num_features=8",
        "model.net.num_extract_blocks=1",
        "model.net.num_reconstruct_blocks=1",
        "model.net.deformable_groups=2",
    ],
}


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            ["model=edsr", "scale=2", "model.net.num_blocks=1", "frames=3"],
            "frames=3 sets the clip length of a video network; EDSR takes images",
        ),
        (
            [*TINY_VIDEO["edvr"], "scale=4", "frames=7"],
            "frames=7: EDVR takes windows of exactly 5 frames",
        ),
        (
            [*TINY_VIDEO["iconvsr"], "scale=4", "frames=3"],
            "frames=3: IconVSR takes clips of at least 5 frames",
        ),
        (
            [*TINY_VIDEO["basicvsr"], "scale=4", "quantize=int8", "calibration={images}"],
            "BasicVSR is a video network, exported in fp32 only",
        ),
        ([*TINY_VIDEO["basicvsr"], "scale=4", "frames=0"], "frames must be"),
    ],
    ids=["image-network", "edvr-window", "iconvsr-short", "int8", "zero"],
)
def test_bad_clip_settings_give_one_error_line(tmp_path: Path, capsys, overrides, words):
    images = tmp_path / "images"
    images.mkdir()
    write_image(images / "a.png", np.zeros((16, 16, 3), np.uint8))
    output = tmp_path / "x.onnx"
    overrides = [value.format(images=images) for value in overrides]
    outcome = run_in_process("export", [*overrides, f"output={output}"], tmp_path, capsys)
    line = one_error_line(outcome)  # type: ignore[arg-type]
    assert words in line, line
    assert not output.exists()


# --- the real networks (slow: a full-size SPyNet or deformable alignment each) --------------------
def basicvsr() -> nn.Module:
    from src.archs.basicvsr import BasicVSR

    return BasicVSR(num_features=8, num_blocks=1)


def iconvsr() -> nn.Module:
    from src.archs.iconvsr import IconVSR

    return IconVSR(num_features=8, num_blocks=1)


def basicvsrpp() -> nn.Module:
    from src.archs.basicvsrpp import BasicVSRPlusPlus

    return BasicVSRPlusPlus(num_features=8, num_blocks=1)


def edvr() -> nn.Module:
    from src.archs.edvr import EDVR

    return EDVR(num_features=8, num_extract_blocks=1, num_reconstruct_blocks=1, deformable_groups=2)


def realbasicvsr() -> RealBasicVSR:

    return RealBasicVSR(num_features=8, num_propagation_blocks=1, num_cleaning_blocks=1)


def perturbed(make: Callable[[], NetworkT]) -> NetworkT:
    """``make()`` (seeded) with its weights moved off their initialisation (zero offset layers,
    small flows), so flows, deformable offsets and masks are far from trivial and a size frozen
    in the graph would show."""
    torch.manual_seed(0)
    net = make()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "frames"),
    [(basicvsr, 3), (iconvsr, 5), (basicvsrpp, 4), (edvr, None), (realbasicvsr, 3)],
    ids=["basicvsr", "iconvsr", "basicvsrpp", "edvr", "realbasicvsr"],
)
def test_each_video_network_exports_and_matches_pytorch_on_clips(tmp_path: Path, make, frames):
    """Export (N, H, W dynamic), onnxruntime against PyTorch at 40x48 and 29x53 (the parity
    check) and at one more size; the figures printed are the README's."""
    module = SRModule(perturbed(make), scale=4).eval()
    path = tmp_path / "net.onnx"
    worst = export_verified_onnx(module, path, sample_size=32, frames=frames)
    network = OnnxNetwork(path)
    lr = torch.rand(2, network.num_frames or 1, 3, 36, 20)
    with torch.no_grad():
        expected = module.run_net(lr, module.net)
    extra = float((network(lr) - expected).abs().max())
    print(
        f"{type(module.net).__name__}: T={network.num_frames} max|diff| {max(worst, extra):.2e} "
        f"size {path.stat().st_size / 2**20:.2f} MB"
    )
    assert worst < 1e-4 and extra < 1e-4


@pytest.mark.slow
def test_basicvsrpp_takes_the_same_flows_for_a_mirrored_clip(tmp_path: Path):
    """PyTorch reuses the backward flows for a clip that reads the same backwards; the graph
    computes the forward ones, which are the same."""
    module = SRModule(perturbed(basicvsrpp), scale=4).eval()
    path = tmp_path / "pp.onnx"
    export_onnx(module, path, sample_size=16, frames=4)
    half = torch.rand(1, 2, 3, 16, 24)
    mirrored = torch.cat((half, half.flip(1)), dim=1)
    with torch.no_grad():
        expected = module.run_net(mirrored, module.net)
    assert float((OnnxNetwork(path)(mirrored) - expected).abs().max()) < 1e-4


@pytest.mark.slow
def test_realbasicvsr_keeps_its_data_dependent_cleaning_stop(tmp_path: Path):
    """The number of cleaning passes depends on the residual's mean: with the threshold between
    two clips' first residuals, PyTorch cleans one once and the other three times, and the file
    (torch.cond, ONNX If) does the same for both."""
    net = perturbed(realbasicvsr)
    calm, busy = torch.zeros(1, 3, 3, 16, 16), 4 * torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        first = [float(net.residuals(clip).abs().mean()) for clip in (calm, busy)]
    assert first[1] > 2 * first[0]
    net.dynamic_refine_thres = 255 * (first[0] + first[1]) / 2
    module = SRModule(net, scale=4).eval()
    path = tmp_path / "real.onnx"
    export_onnx(module, path, sample_size=16, frames=3)
    network = OnnxNetwork(path)
    stopped_after_one = []
    for clip in (calm, busy):
        with torch.no_grad():
            expected = module.run_net(clip, net)
            stopped_after_one.append(torch.equal(net.clean(clip), clip + net.residuals(clip)))
        assert float((network(clip) - expected).abs().max()) < 1e-4
    # One clip stops after a pass, the other does not: the branch is taken both ways.
    assert sorted(stopped_after_one) == [False, True]


class PairFlow(nn.Module):
    """SPyNet on a pair (N, 2, 3, H, W), as the video networks call it."""

    def __init__(self) -> None:
        super().__init__()
        from src.archs.spynet import SPyNet

        self.spynet = SPyNet()

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.spynet(pair)


@pytest.mark.slow
def test_spynet_flows_hold_at_sizes_other_than_the_traced_one(tmp_path: Path):
    """With weights that give flows of tens of pixels, the graph's flows equal PyTorch's at
    sizes other than the traced 32x32: its padded size and flow scaling stay symbolic (a ratio
    frozen at the traced size was off by 6 px at 20x28, a floor division gave a zero size)."""
    from src.models.exporting import quiet_exporter

    torch.manual_seed(0)
    net = PairFlow().eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0, 0.05)
    path = tmp_path / "spynet.onnx"
    dynamic = torch.export.Dim.DYNAMIC
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            net,
            (torch.rand(2, 2, 3, 32, 32),),
            dynamo=True,
            dynamic_shapes={"pair": {0: dynamic, 3: dynamic, 4: dynamic}},
            opset_version=18,
            verbose=False,
        )
    assert program is not None
    program.save(str(path))
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 3, 20, 28), (1, 2, 3, 40, 70)]:
        pair = torch.rand(shape)
        with torch.no_grad():
            expected = net(pair)
        (got,) = session.run(None, {session.get_inputs()[0].name: pair.numpy()})
        assert float(expected.abs().max()) > 5  # flows of several pixels
        assert float(np.abs(got - expected.numpy()).max()) < 1e-3
