"""What an operator reads from ``lfr run``: a lost stream, a skipped file, no FFmpeg.

``lfr run`` runs in a subprocess, with the real models, against a real HTTP stream
(ffmpeg on 127.0.0.1, :mod:`tests.support.stream_server`) that the test stops and
starts again, or a folder with one damaged file. The watchlist is empty: these
tests are about the operator's output, not about matching. Every wait has a
time limit; none is a speed assertion.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

import lfr
from lfr.audit import SigningKey
from tests.support.stream_server import Server, free_port, listening

WAIT_S = 60.0  # limits on waits that must end; never a speed assertion

#: ``lfr.cli.main`` with its silencing of OpenCV and FFmpeg undone: the control.
UNQUIETED = (
    "import sys, lfr.cli as c; c._quiet_opencv = lambda: None; "
    "sys.exit(c.main(sys.argv[1:]))"
)


def raw_lines(text: str) -> list[str]:
    """Lines FFmpeg (``[tcp @ 0x...]``) or OpenCV (``[ WARN:0@...]``) printed."""
    return [line for line in text.splitlines() if line.lstrip().startswith("[")]


@dataclass(frozen=True)
class Site:
    folder: Path
    video: Path

    def args(self, source: str, run: Path) -> list[str]:
        """``lfr run``'s arguments, its store and log in ``run``."""
        return [
            "run", "--source", source, "--watchlist", str(self.folder / "w.lfrw"),
            "--watchlist-key", str(self.folder / "wl.key"),
            "--store-key", str(self.folder / "store.key"),
            "--store", str(run / "alerts.db"), "--audit", str(run / "audit.log"),
            "--signing-key", str(self.folder / "audit.key"),
        ]  # fmt: skip


@pytest.fixture(scope="module")
def site(embedder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (it serves the test stream)")
    folder = tmp_path_factory.mktemp("first-use")
    wl_key = lfr.Key.generate()
    wl_key.save(folder / "wl.key")
    lfr.Key.generate().save(folder / "store.key")
    SigningKey.generate().save(folder / "audit.key")
    wl = lfr.Watchlist.create(folder / "w.lfrw", wl_key, embedder=lfr.FaceEmbedder())
    wl.save()
    wl.destroy()
    video = folder / "clip.avi"
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (160, 120)
    )
    assert writer.isOpened()
    for i in range(30):
        writer.write(np.full((120, 160, 3), i * 8, np.uint8))
    writer.release()
    return Site(folder, video)


def cli(
    *args: str, code: str | None = None, timeout: float = WAIT_S
) -> subprocess.CompletedProcess[str]:
    """``python -m lfr ARGS``, or ``python -c CODE ARGS``."""
    head = ["-m", "lfr"] if code is None else ["-c", code]
    return subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- FFmpeg's and OpenCV's own lines ---------------------------------------------


@pytest.mark.parametrize("quiet", [True, False], ids=["lfr", "control-unquieted"])
def test_an_unreachable_stream_is_lfrs_message_without_ffmpeg_lines(
    site: Site, tmp_path: Path, quiet: bool
) -> None:
    url = f"http://127.0.0.1:{free_port()}/live"  # nothing listens there
    done = cli(*site.args(url, tmp_path), code=None if quiet else UNQUIETED)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "cannot open stream" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    if quiet:
        assert raw_lines(done.stderr) == [], done.stderr[-2000:]
        assert raw_lines(done.stdout) == []
    else:  # without lfr's setting, FFmpeg's or OpenCV's own line is there (which
        # one depends on the OpenCV build: "[tcp @ 0x...] Connection to tcp://..."
        # or "[ WARN:0@...] global cap.cpp ... can't be used to capture by name")
        assert raw_lines(done.stderr + done.stdout) != [], done.stderr[-2000:]


# --- a stream lost and back ------------------------------------------------------


class Run:
    """``lfr run`` in a subprocess, its stderr in a file (as a service's log)."""

    def __init__(self, args: list[str], code: str | None = None) -> None:
        self._err = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in end)
            "w+", prefix="lfr-run-", suffix=".stderr"
        )
        head = ["-m", "lfr"] if code is None else ["-c", code]
        self.process = subprocess.Popen(
            [sys.executable, *head, *args],
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )

    def stderr(self) -> str:
        with open(self._err.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_for(self, found: Callable[[str], bool], what: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while True:
            text = self.stderr()
            if found(text):
                return text
            assert self.process.poll() is None, f"lfr run ended: {text[-2000:]}"
            assert time.monotonic() < deadline, f"no {what}: {text[-2000:]}"
            time.sleep(0.1)

    def end(self) -> tuple[int, str, str]:
        """SIGTERM; the exit status, stdout and stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=WAIT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(WAIT_S)
        text = self.stderr()
        self._err.close()
        return self.process.returncode, out, text


@pytest.fixture
def server(site: Site) -> Iterator[Server]:
    serving = Server(site.video, free_port())
    try:
        yield serving
    finally:
        serving.kill()


def start(server: Server) -> None:
    server.start()
    deadline = time.monotonic() + WAIT_S
    while not listening(server.port):
        assert time.monotonic() < deadline, "ffmpeg never listened"
        time.sleep(0.05)


def frames_shown(text: str) -> int:
    """The most frames any status line showed."""
    return max((int(n) for n in re.findall(r"frames (\d+)", text)), default=0)


def test_the_status_line_says_when_the_stream_is_lost_and_back(
    site: Site, server: Server, tmp_path: Path
) -> None:
    start(server)
    run = Run(site.args(server.url, tmp_path))
    try:
        run.wait_for(lambda t: frames_shown(t) > 0, "frames")
        # Negative control: while frames come, nothing says the stream is lost.
        assert "STREAM LOST" not in run.stderr()
        server.kill()
        lost = run.wait_for(lambda t: "STREAM LOST" in t, "lost stream on stderr")
        line = next(ln for ln in lost.splitlines() if "STREAM LOST" in ln)
        assert re.search(r"STREAM LOST at \d\d:\d\d:\d\d UTC, reconnecting", line)
        start(server)  # the same URL again: lfr run reconnects by itself
        run.wait_for(lambda t: "stream back after" in t, "stream back on stderr")
    finally:
        code, out, err = run.end()
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    # The reconnect attempts while it was down printed nothing of FFmpeg or OpenCV
    # (test_an_unreachable_stream_... shows the line each attempt prints otherwise).
    assert raw_lines(err) == [], err[-2000:]
    assert raw_lines(out) == []
    tail = err.split("stream back after", 1)[1]
    assert "STREAM LOST" not in tail  # back: the next lines no longer say lost


# --- a folder with a damaged file ------------------------------------------------


def test_a_skipped_file_is_named_by_its_path(site: Site, tmp_path: Path) -> None:
    folder = tmp_path / "stills"
    folder.mkdir()
    for name, value in (("a.png", 10), ("c.png", 200)):
        assert cv2.imwrite(str(folder / name), np.full((48, 64, 3), value, np.uint8))
    damaged = folder / "b_damaged.jpg"
    damaged.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
    out = tmp_path / "run"
    out.mkdir()
    done = cli(*site.args(str(folder), out))
    assert done.returncode == 0, done.stderr[-2000:]
    skipped = [ln for ln in done.stderr.splitlines() if "b_damaged" in ln]
    assert len(skipped) == 1, done.stderr[-2000:]
    assert skipped[0].startswith(f"skipped {damaged}: not decodable"), skipped
    assert "not a JPEG after all" not in done.stderr  # never its content

    # Negative control: without the damaged file nothing is skipped.
    damaged.unlink()
    again = tmp_path / "again"
    again.mkdir()
    clean = cli(*site.args(str(folder), again))
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert not [ln for ln in clean.stderr.splitlines() if "skipped " in ln]
