"""A real network stream for tests: ffmpeg serving a video over HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

#: How long a killed ffmpeg may take to go.
KILL_WAIT_S = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port`` (from /proc/net/tcp).

    Connecting to find out would take the one client ``ffmpeg -listen 1`` serves.
    """
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
                return True
    return False


class Server:
    """``ffmpeg -re -stream_loop -1 -i VIDEO -f mpjpeg -listen 1 http://...``.

    Real-time pace, looping, one client; :meth:`kill` and :meth:`start` again to
    lose and restore the stream.
    """

    def __init__(self, video: Path, port: int, *, quality: int = 3) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/live"
        self._cmd = [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(video), "-c:v", "mjpeg", "-q:v", str(quality), "-f", "mpjpeg",
            "-listen", "1", self.url,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self._cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(KILL_WAIT_S)
            self.process = None
