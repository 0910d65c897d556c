"""One atomic writer for every file SR Lab writes (:mod:`src.utils.files`).

A write killed midway leaves the earlier file whole and a temporary that the next write of that
file removes; a failed write leaves nothing; the temporary's name carries the writer's process
id; and no module but :mod:`src.utils.files` renames a temporary or writes a file in place,
except the few listed below with their reasons.
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src.leaderboard import Run, write_leaderboard
from src.metrics.report import SetSummary, write_results
from src.utils.files import (
    atomic_path,
    is_temporary,
    remove_stale,
    temporary_beside,
    write_text_atomic,
    writer_pid,
)

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
WRITER_MODULE = SRC / "utils" / "files.py"

# The child blocks in the fsync of its first atomic write: the temporary is full, not renamed.
KILLED_WRITER = """
import os, sys, time
from pathlib import Path

def stall(fd):
    print("writing", flush=True)
    time.sleep(120)

os.fsync = stall
folder, which = Path(sys.argv[1]), sys.argv[2]
if which == "results":
    from src.metrics.report import SetSummary, write_results
    records = [{"set": "Set5", "image": f"img_{i:05d}", "psnr_y": 30.0 + i} for i in range(50_000)]
    write_results(folder, [SetSummary("Set5", 50_000, 31.0, 0.9)], records, {"run": "new"})
else:
    from src.leaderboard import Run, write_leaderboard
    runs = [Run(folder / str(i), f"new-{i}", "completed", [f"lr={i}"]) for i in range(2000)]
    write_leaderboard(folder, runs, with_plot=False)
"""

FIRST_FILE = {"results": "results.json", "leaderboard": "leaderboard.md"}


def write_earlier(folder: Path, which: str) -> None:
    """What an earlier run left: the files the killed run was about to replace."""
    if which == "results":
        write_results(folder, [SetSummary("Set5", 1, 30.0, 0.9)], [], {"run": "old"})
    else:
        write_leaderboard(folder, [Run(folder / "a", "old", "completed", [])], with_plot=False)


def temporaries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_temporary(p))


@pytest.mark.parametrize("which", ["results", "leaderboard"])
def test_a_killed_write_keeps_the_earlier_file_and_the_next_write_removes_its_temporary(
    tmp_path: Path, which: str
):
    write_earlier(tmp_path, which)
    target = tmp_path / FIRST_FILE[which]
    before = target.read_bytes()
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path), which],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        (left,) = temporaries(tmp_path)
        assert writer_pid(left) == child.pid
        assert left.stat().st_size > len(before)  # the new content, written but not renamed
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert target.read_bytes() == before
    assert temporaries(tmp_path) == [left]

    write_earlier(tmp_path, which)  # the next run
    assert temporaries(tmp_path) == []
    assert target.read_bytes() == before


def test_a_write_that_fails_midway_keeps_the_earlier_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_earlier(tmp_path, "results")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_results(tmp_path, [SetSummary("Set5", 2, 33.0, 0.95)], [{}], {"run": "new"})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_the_temporary_is_hidden_beside_the_target_with_the_process_id_and_its_suffix(
    tmp_path: Path,
):
    target = tmp_path / "out" / "img.v2.png"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.is_file()
        assert temporary.name.startswith(".img.v2.") and temporary.name.endswith(".partial.png")
        assert writer_pid(temporary) == os.getpid() and is_temporary(temporary)
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new" and temporaries(target.parent) == []

    folder = temporary_beside(tmp_path / "cache_x2", folder=True)
    assert folder.is_dir() and folder.name.startswith(".cache_x2.")
    assert writer_pid(folder) == os.getpid()


def test_the_process_id_is_read_after_any_number_in_the_name(tmp_path: Path):
    assert writer_pid(tmp_path / ".run.2024.4242.ab_9.partial.json") == 4242
    assert writer_pid(tmp_path / "run.2024.json") is None


def test_only_temporaries_of_dead_writers_are_removed(tmp_path: Path):
    dead = 2**22 + 12345  # above the kernel's default pid_max: no such process
    target = tmp_path / "leaderboard.csv"
    stale = tmp_path / f".leaderboard.{dead}.k3x9.partial.csv"
    live = tmp_path / f".leaderboard.{os.getpid()}.a1b2.partial.csv"  # a write still going on
    for path in (stale, live):
        path.write_text("half")
    write_text_atomic(target, "run\n")
    assert not stale.exists() and live.exists()
    assert remove_stale([live]) == []


# --- one writer ------------------------------------------------------------------------------
# Writes outside src/utils/files.py that are not a file SR Lab publishes, with the reason.
IN_PLACE_EXCEPTIONS = {
    # the /proc file that resets the peak memory counter
    "src/models/efficiency.py": 1,
    # the resumable download: ``<name>.part`` is appended to across runs, published when verified
    "src/io/download.py": 1,
    # hr.u8, lr.u8 and index.json inside the cache's temporary folder, published whole
    "src/data/subimages.py": 3,
}
TEMPORARY_EXCEPTIONS = {
    # the writability probe, deleted at once
    "src/utils/schema.py": 1,
    # scratch folders, never published: the src.eval run behind the challenge's PSNR floor, and
    # the fp32 graph that int8 quantisation reads (the int8 file goes through atomic_path)
    "src/models/challenges.py": 1,
    "src/models/quantization.py": 1,
}
RENAMES = {("os", "replace"), ("os", "rename"), ("shutil", "move"), ("shutil", "copyfile")}
TEMPORARY_MAKERS = {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory"}


def writes_mode(call: ast.Call) -> bool:
    """``open(path, "w...")`` or ``path.open("w...")``: a mode that writes."""
    modes = [*call.args, *(k.value for k in call.keywords if k.arg == "mode")]
    return any(
        isinstance(m, ast.Constant) and isinstance(m.value, str) and set(m.value) & set("wax")
        for m in modes
    ) or any(isinstance(m, ast.IfExp) for m in modes)


def classify(call: ast.Call) -> str | None:
    """'rename', 'in place' or 'temporary' for a call that does one of those, else None."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    owner = getattr(func.value, "id", None) if isinstance(func, ast.Attribute) else None
    if (owner, name) in RENAMES:
        return "rename"
    # Path.replace / Path.rename take one target; str.replace and dataclasses.replace do not.
    if name in ("replace", "rename") and len(call.args) == 1 and not call.keywords:
        return "rename"
    if name in TEMPORARY_MAKERS:
        return "temporary"
    if name in ("write_text", "write_bytes", "savefig", "tofile") or (
        name == "open" and writes_mode(call)
    ):
        return "in place"
    return None


def found_in_src() -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for path in sorted(SRC.rglob("*.py")):
        if path == WRITER_MODULE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (kind := classify(node)):
                module = counts.setdefault(str(path.relative_to(REPO)), {})
                module[kind] = module.get(kind, 0) + 1
    return counts


def uses_of(kind: str, found: dict[str, dict[str, int]]) -> dict[str, int]:
    return {module: kinds[kind] for module, kinds in found.items() if kind in kinds}


def test_every_writer_goes_through_the_one_helper():
    found = found_in_src()
    assert uses_of("rename", found) == {}
    assert uses_of("temporary", found) == TEMPORARY_EXCEPTIONS
    in_place = uses_of("in place", found)
    # Writes into a temporary that atomic_path handed out are fine: the encoders (OpenCV,
    # matplotlib) write to a path.
    # write_image, the plot; PyAV's muxer into VideoWriter's temporary, plus one MP4 written to
    # memory (io.BytesIO, the codec round trip of RealBasicVSR's degradations); a registered
    # weight file streamed into its temporary and published once its digest checks.
    handed_out = {
        "src/io/images.py": 1,
        "src/leaderboard.py": 1,
        "src/io/video.py": 2,
        "src/models/weight_registry.py": 1,
    }
    assert in_place == {**IN_PLACE_EXCEPTIONS, **handed_out}


def test_the_check_above_sees_the_writes_it_forbids():
    calls = [
        "os.replace(a, b)",
        "tmp.replace(path)",
        "tmp.rename(path)",
        "path.write_text(text)",
        "path.open('w')",
        "open(path, 'wb')",
        "tempfile.mkstemp()",
    ]
    assert None not in [classify(call_of(code)) for code in calls]
    harmless = ["text.replace('a', 'b')", "replace(summary, psnr=1)", "path.open()", "open(p)"]
    assert [classify(call_of(code)) for code in harmless] == [None] * len(harmless)


def call_of(code: str) -> ast.Call:
    call = ast.parse(code, mode="eval").body
    assert isinstance(call, ast.Call)
    return call


def test_a_killed_writes_temporary_is_not_listed_as_an_image(tmp_path: Path):
    from src.io.images import list_images
    from tests.test_data import write_folder

    (kept,) = write_folder(tmp_path, 1, height=8, width=8)
    (tmp_path / ".img_002.4242.abcd.partial.png").write_bytes(kept.read_bytes())
    assert list_images(tmp_path) == [kept]
