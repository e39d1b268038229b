"""Promise 1 through a whole Deployment: no passer-by's face outlives its decision.

A real :class:`lfr.Deployment` (real detector, real embedder, a watchlist nobody in the
scenes is on) runs over a video file and over a folder of stills, each frame showing two
LFW people. The deployment runs in a child process; this (parent) process scans the
child's whole memory from outside (``/proc/CHILD/mem``, no noise added anywhere), with
``lfr._core.scan_process``, for 64-byte blocks of the decoded face regions.

The scan runs from outside because a scan inside the child allocates its read buffer
(and Python objects) in the child's heap: that allocation can land on freed, unwiped
memory and zero it before it is read, hiding exactly the leaks this test is about
(a decoder's buffer freed without a wipe). From outside, nothing in the child is
allocated or written.

The child pauses before each frame is detected: it writes ``frame K`` to stdout and
blocks until the parent, having scanned for the frames before K, writes ``go``. After
the run (deployment and store closed) it writes ``done`` and pauses again for the last
scan. The references are decoded by the parent, XOR-masked, and handed over masked, so
neither process holds a plaintext copy the scan could find.

What may stay is named in docs/data-handling.md: for video, the decoded frame that
OpenCV's FFmpeg backend keeps in its own conversion buffer (outside lfr's reach). The
scan after the run therefore allows hits of the last decoded frame only, of no other.

Two negative controls prove that the scan can fail: the child keeps one plain numpy
copy of each frame (live copies: every frame is found), or copies each frame's face
regions into small numpy arrays (under glibc's 128 KiB mmap threshold, so they stay in
the heap) and frees them at once without a wipe (freed copies: found mid-run and after).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from lfr import _core

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        not os.path.exists("/proc/self/mem"), reason="needs Linux /proc/PID/mem"
    ),
]

U8 = npt.NDArray[np.uint8]
FRAMES = 8
H, W = 480, 640
SPOTS = ((40, 115), (350, 115))  # where the two 250x250 photos go (x, y)
FACE = slice(80, 170)  # the face region inside a 250x250 LFW photo
TIMEOUT_S = 600  # the whole child
STEP_S = 180  # one line from the child (model loading comes before the first)
PREFIX = "lfr-e2e "

CHILD = textwrap.dedent(
    """
    import ctypes, json, sys
    from pathlib import Path
    import numpy as np
    import lfr
    from lfr import _core
    from lfr.pipeline import Deployment

    source, work, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    spots = json.loads(sys.argv[4])
    face = slice(*json.loads(sys.argv[5]))
    masked = np.load(work / "masked.npy")  # (frames, rows, bytes per row)
    key = (work / "mask.key").read_bytes()
    last, rows = masked.shape[0] - 1, masked.shape[1]
    secrets = [masked[f, r] for f in range(masked.shape[0]) for r in range(rows)]

    def pause(line):
        # Tell the parent where we are; wait until it has scanned this process.
        sys.stdout.write("lfr-e2e " + line + "\\n")
        sys.stdout.flush()
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("the parent did not say go")

    class Watching:
        # The real detector; before each frame the parent scans for the frames so far.
        def __init__(self, inner):
            self.inner, self.seen, self.kept = inner, 0, []
        def detect(self, frame):
            dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
            pause(f"frame {self.seen} {dumpable}")
            if mode == "freed" and self.seen == last:
                # The old method, for comparison, on the same memory: this thread
                # scans its own process for the frames the parent just scanned for.
                hits = _core.scan_memory(secrets[: self.seen * rows], key)[0]
                pause("inside " + json.dumps(sorted({s // rows for s, *_ in hits})))
            if mode == "live":  # a careless integrator keeps a copy
                self.kept.append(np.array(frame))
            elif mode == "freed":  # small copies, freed without a wipe
                copies = [np.array(row) for x, y in spots
                          for row in frame[y + face.start : y + face.stop,
                                           x + face.start : x + face.stop]]
                del copies
            self.seen += 1
            return self.inner.detect(frame)

    embedder = lfr.FaceEmbedder()
    detector = Watching(lfr.FaceDetector())
    key_w = lfr.Key.generate()
    wl = lfr.Watchlist.create(work / "w.lfrw", key_w, embedder=embedder)
    rng = np.random.default_rng(0)
    for i in range(5):
        wl.add(f"R-{i}", rng.standard_normal((1, embedder.dim), dtype=np.float32))
    store = lfr.AlertStore(work / "alerts.db", lfr.Key.generate())
    with Deployment(source=source, watchlist=wl, store=store,
                    audit=work / "audit.log", signing_key=lfr.SigningKey.generate(),
                    detector=detector, embedder=embedder) as dep:
        dep.wait()
        stats = dep.stats()
    store.close()
    pause("done " + json.dumps({"frames": stats.frames, "faces": stats.faces,
                                "alerts": stats.alerts}))
    """
)


def photos(lfw_dir: Path) -> list[Path]:
    people = sorted(p for p in (lfw_dir / "identities").iterdir() if p.is_dir())
    return [sorted(p.glob("*.jpg"))[0] for p in people[: 2 * FRAMES]]


def scene(pair: list[Path]) -> U8:
    canvas = np.full((H, W, 3), 90, np.uint8)
    for (x, y), photo in zip(SPOTS, pair):
        image = cv2.imread(str(photo))
        assert image is not None
        assert image.shape == (250, 250, 3)
        canvas[y : y + 250, x : x + 250] = image
    return canvas


def face_rows(frame: U8) -> U8:
    """Every row of both face regions of a decoded frame, one row per secret."""
    rows = [
        frame[y + FACE.start : y + FACE.stop, x + FACE.start : x + FACE.stop].reshape(
            FACE.stop - FACE.start, -1
        )
        for x, y in SPOTS
    ]
    return np.concatenate(rows)


def write_inputs(kind: str, tmp: Path, lfw_dir: Path) -> tuple[str, list[U8]]:
    """Writes the source; returns it and the frames as a decoder gives them back."""
    scenes = [scene(photos(lfw_dir)[2 * i : 2 * i + 2]) for i in range(FRAMES)]
    if kind == "folder":
        folder = tmp / "stills"
        folder.mkdir()
        for i, image in enumerate(scenes):
            assert cv2.imwrite(str(folder / f"{i:03d}.png"), image)
        decoded: list[U8] = []
        for i in range(FRAMES):
            still = cv2.imread(str(folder / f"{i:03d}.png"))
            assert still is not None
            decoded.append(np.asarray(still, np.uint8))
        return str(folder), decoded
    video = tmp / "scenes.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5, (W, H))
    assert writer.isOpened()
    for image in scenes:
        writer.write(image)
    writer.release()
    cap = cv2.VideoCapture(str(video))
    decoded = []
    while True:
        ok, got = cap.read()
        if not ok:
            break
        decoded.append(np.asarray(got, np.uint8))
    cap.release()
    assert len(decoded) == FRAMES
    return str(video), decoded


class Lines:
    """Reads the child's protocol lines from its stdout, each within a deadline."""

    def __init__(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        self.fd = child.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.pending = b""

    def next(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\n" in self.pending:
                line, self.pending = self.pending.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(PREFIX):
                    return text[len(PREFIX) :]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from the child in {timeout_s} s")
            if not self.selector.select(left):
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the child closed its stdout")
            self.pending += chunk


def frames_in(pid: int, masked: U8, key: bytes, upto: int) -> tuple[list[int], Any]:
    """The frames (< ``upto``) with a block in the process, and their mappings."""
    rows = masked.shape[1]
    secrets = [masked[f, r] for f in range(upto) for r in range(rows)]
    hits, needles, scanned, unreadable, _ = _core.scan_process(pid, secrets, key)
    assert scanned > 100 << 20, f"only {scanned} bytes of the child read"
    # The child's other threads run on: a mapping may go between /proc/PID/maps and
    # its read (seen: 16 KiB). Anything more would be a blind spot.
    assert unreadable <= 1 << 20, f"{unreadable} bytes of the child could not be read"
    assert not secrets or sum(needles) > 0
    return sorted({s // rows for s, *_ in hits}), sorted({m for *_, m in hits})


def run_child(kind: str, tmp: Path, lfw_dir: Path, mode: str) -> dict[str, Any]:
    """Runs the deployment in a child; scans it from here before each frame and after.

    Returns ``mid`` (``[k, frames, mappings]`` before frame ``k``), ``after``
    (``[frames, mappings]``), the run's stats and, for ``freed``, ``inside`` (the
    frames that the child's own scan, in its deployment thread, found right after
    the parent's last mid-run scan).
    """
    source, decoded = write_inputs(kind, tmp, lfw_dir)
    key = np.frombuffer(os.urandom(64), np.uint8)
    rows = np.stack([face_rows(f) for f in decoded])
    masked = rows ^ np.resize(key, rows.shape[-1])  # the key repeats from byte 0
    rows.fill(0)
    np.save(tmp / "masked.npy", masked)
    (tmp / "mask.key").write_bytes(key.tobytes())
    spots = json.dumps([list(s) for s in SPOTS])
    face = json.dumps([FACE.start, FACE.stop])
    result: dict[str, Any] = {"mid": []}
    with open(tmp / "child.err", "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, source, str(tmp), mode, spots, face],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert child.stdin is not None
    assert child.stdout is not None
    started = time.monotonic()
    lines = Lines(child)
    try:
        while True:
            if time.monotonic() - started > TIMEOUT_S:
                raise TimeoutError(f"the child ran over {TIMEOUT_S} s")
            line = lines.next(STEP_S)
            word, _, rest = line.partition(" ")
            if word == "frame":
                seen, dumpable = (int(n) for n in rest.split())
                # Deployment.start hardened the child: root reads it all the same.
                assert dumpable == 0, "the deployment did not harden its process"
                if seen:
                    result["mid"].append(
                        [seen, *frames_in(child.pid, masked, key.tobytes(), seen)]
                    )
            elif word == "done":
                result.update(json.loads(rest))
                result["after"] = list(
                    frames_in(child.pid, masked, key.tobytes(), FRAMES)
                )
            elif word == "inside":
                result["inside"] = json.loads(rest)
            child.stdin.write(b"go\n")
            child.stdin.flush()
            if word == "done":
                break
        child.stdin.close()
        assert child.wait(timeout=STEP_S) == 0, f"the child exited {child.returncode}"
    except BaseException as exc:
        child.kill()
        child.wait(timeout=STEP_S)
        stderr = (tmp / "child.err").read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc!r}; the child's stderr:\n{stderr}") from exc
    finally:
        child.stdin.close()
        child.stdout.close()
        lines.selector.close()
    assert result["frames"] == FRAMES
    assert result["faces"] >= 2 * FRAMES - 2
    assert result["alerts"] == 0
    assert [m[0] for m in result["mid"]] == list(range(1, FRAMES))
    return result


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_no_passer_by_face_outlives_its_decision(
    kind: str, tmp_path: Path, lfw_dir: Path, yunet_path: Path, embedder_path: Path
) -> None:
    result = run_child(kind, tmp_path, lfw_dir, "clean")
    for seen, frames, mappings in result["mid"]:
        assert frames == [], f"before frame {seen}: frames {frames} found in {mappings}"
    frames, mappings = result["after"]
    # Named in docs/data-handling.md: OpenCV's FFmpeg backend leaves the last frame it
    # converted in its own heap buffer (freed, not wiped); nothing of any other frame
    # may be left, and that one only in the heap (not in lfr's anonymous mappings).
    allowed = [FRAMES - 1] if kind == "video" else []
    assert set(frames) <= set(allowed), f"after the run: frames {frames} in {mappings}"
    if frames:
        assert set(mappings) == {"[heap]"}, mappings


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_the_scan_finds_faces_that_escape_the_wipe(
    kind: str, tmp_path: Path, lfw_dir: Path, yunet_path: Path, embedder_path: Path
) -> None:
    """Negative control, live copies: a plain numpy copy of each frame is found."""
    result = run_child(kind, tmp_path, lfw_dir, "live")
    frames, _ = result["after"]
    assert frames == list(range(FRAMES))
    last_seen, mid_frames, _ = result["mid"][-1]
    assert mid_frames == list(range(last_seen))


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_the_scan_finds_freed_unwiped_copies(
    kind: str, tmp_path: Path, lfw_dir: Path, yunet_path: Path, embedder_path: Path
) -> None:
    """Negative control, freed copies: small heap copies freed without a wipe."""
    result = run_child(kind, tmp_path, lfw_dir, "freed")
    frames, _ = result["after"]
    assert frames, "no freed copy found after the run"
    last_seen, mid_frames, _ = result["mid"][-1]
    assert mid_frames, f"no freed copy found before frame {last_seen}"
    # The old method (the child scanning itself, in its deployment thread) right
    # after the last mid-run scan from outside: it never sees more, and may see less.
    assert set(result["inside"]) <= set(mid_frames), result["inside"]
