"""``lfr eval``'s progress: a bar on a terminal, plain lines in a log file.

The end-to-end test runs ``lfr eval`` with the real models on a few LFW photos,
its stderr in a file (as under a scheduler or a service); the terminal test runs
the same progress in a pseudo-terminal. Every subprocess has a time limit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

WAIT_S = 120.0  # limits on subprocesses that must end; never a speed assertion


@pytest.fixture
def small_dataset(lfw_dir: Path, tmp_path: Path) -> Path:
    """Three identities of three photos and two unknowns, copied from lfw-dev."""
    root = tmp_path / "data"
    names = sorted(p.name for p in (lfw_dir / "identities").iterdir())[:3]
    for name in names:
        (root / "identities" / name).mkdir(parents=True)
        for photo in sorted((lfw_dir / "identities" / name).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / "identities" / name / photo.name)
    (root / "unknowns").mkdir()
    for photo in sorted((lfw_dir / "unknowns").glob("*.jpg"))[:2]:
        shutil.copy(photo, root / "unknowns" / photo.name)
    return root


@pytest.mark.data
def test_lfr_eval_progress_in_a_log_file_is_plain_lines(
    small_dataset: Path, embedder_path: Path, yunet_path: Path, tmp_path: Path
) -> None:
    log = tmp_path / "eval.log"
    with log.open("wb") as err:
        done = subprocess.run(
            [sys.executable, "-m", "lfr", "eval", str(small_dataset), "--no-cache"],
            stdout=subprocess.PIPE,
            stderr=err,
            timeout=WAIT_S,
            check=False,
        )
    text = log.read_bytes()
    assert done.returncode == 0, text[-2000:]
    assert b"\r" not in text  # no redraws piled up on one line
    lines = text.decode().splitlines()
    progress = [ln for ln in lines if ln.startswith("lfr eval: embedding")]
    assert progress, lines
    assert progress[-1] == "lfr eval: embedding: 11/11 photos"
    counts = [int(ln.rsplit(" ", 2)[1].split("/")[0]) for ln in progress]
    assert counts == sorted(set(counts))  # each line a step further, none twice
    assert b"mated 6, non-mated 2" in done.stdout


PROGRESS = """
import sys
from lfr.evaluation.dataset import stderr_progress
show = stderr_progress("lfr eval: embedding")
for i in range(1, 41):
    show(i, 40)
print("done", file=sys.stderr)
"""


def run_progress(stderr_tty: bool) -> bytes:
    """The progress of 40 photos, as written to a terminal or a pipe."""
    if not stderr_tty:
        done = subprocess.run(
            [sys.executable, "-c", PROGRESS],
            capture_output=True,
            timeout=WAIT_S,
            check=True,
        )
        return done.stderr
    main, sub = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", PROGRESS],
            stdout=subprocess.DEVNULL,
            stderr=sub,
        )
        os.close(sub)
        sub = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert child.wait(WAIT_S) == 0
    finally:
        if sub >= 0:
            os.close(sub)
        os.close(main)
    return b"".join(chunks)


def test_progress_off_a_terminal_is_a_line_per_tenth() -> None:
    text = run_progress(stderr_tty=False)
    assert b"\r" not in text
    lines = text.decode().splitlines()
    assert lines[-1] == "done"
    expected = [f"lfr eval: embedding: {n}/40 photos" for n in range(4, 41, 4)]
    assert lines[:-1] == expected


def test_progress_on_a_terminal_is_a_bar_redrawn_in_place() -> None:
    # The control for the test above: on a terminal the line is redrawn (tqdm).
    text = run_progress(stderr_tty=True)
    assert re.search(rb"\r(?!\n)", text)  # a return that is no terminal's newline
    assert b"40/40" in text
    assert b"100%" in text
    assert text.rstrip().endswith(b"done")
