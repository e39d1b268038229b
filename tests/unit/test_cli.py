"""The ``lfr`` command and ``python -m lfr`` behave the same."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import lfr
from lfr.cli._common import parse_time

COMMANDS = [[sys.executable, "-m", "lfr"]]
if shutil.which("lfr"):
    COMMANDS.append([str(shutil.which("lfr"))])


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[-2:]))
def test_version(cmd: list[str]) -> None:
    out = run(cmd, "--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"lfr {lfr.__version__}"


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[-2:]))
def test_help(cmd: list[str]) -> None:
    out = run(cmd, "--help")
    assert out.returncode == 0
    assert "usage: lfr" in out.stdout
    assert "info" in out.stdout


def test_both_entry_points_agree() -> None:
    outputs = {run(cmd, "--help").stdout for cmd in COMMANDS}
    assert len(outputs) == 1


def test_info_json() -> None:
    out = run(COMMANDS[0], "info", "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["version"] == lfr.__version__
    assert data["kernels"] == lfr.available_kernels()
    assert data["default_kernel"] == data["kernels"][-1]


def test_unknown_command_fails() -> None:
    out = run(COMMANDS[0], "frobnicate")
    assert out.returncode == 2
    assert "invalid choice" in out.stderr


def test_info_reports_memory_protection() -> None:
    out = run(COMMANDS[0], "info", "--json")
    data = json.loads(out.stdout)
    status = lfr.secure.memory_status()
    assert data["memlock_limit_bytes"] == status.memlock_limit
    assert data["memlock_privileged"] == status.memlock_privileged
    assert data["swap_safe"] == status.swap_safe
    text = run(COMMANDS[0], "info").stdout
    assert "memlock_headroom:" in text
    assert "swap:" in text


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from lfr.cli import _parser

    found: list[tuple[str, argparse.ArgumentParser]] = []
    todo = [("lfr", _parser())]
    while todo:
        name, parser = todo.pop()
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {n}", p) for n, p in action.choices.items()]
    return found


def test_no_help_text_shows_a_doubled_percent_sign() -> None:
    """argparse %-formats help strings, not descriptions: `%%` there shows as is."""
    parsers = _all_parsers()
    assert len(parsers) > 20  # every command and action was reached
    for name, parser in parsers:
        text = parser.format_help()
        assert "%%" not in text, f"{name} --help shows '%%'"
    # Control: a description with %% is shown doubled (what lfr eval did).
    shown = argparse.ArgumentParser(description="FPIR 1%%").format_help()
    assert "1%%" in shown


def test_run_every_below_one_is_refused_before_anything(tmp_path: Path) -> None:
    folder = tmp_path
    argv = [
        sys.executable, "-m", "lfr", "run", "--source", str(folder / "none.mp4"),
        "--watchlist", str(folder / "w.lfrw"), "--store", str(folder / "a.db"),
        "--audit", str(folder / "logs" / "audit.log"),
        "--signing-key", str(folder / "k"),
    ]  # fmt: skip
    for bad in ("0", "-3", "x"):
        done = subprocess.run(
            [*argv, "--every", bad], capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "--every: expected a whole number >= 1" in done.stderr
    # Control: --every 1 gets past the option (and fails later, on the files).
    done = subprocess.run(
        [*argv, "--every", "1"], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "--every" not in done.stderr
    assert not (folder / "logs").exists()
    assert not (folder / "a.db").exists()


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_a_deployment_refuses_every_below_one(every: Any) -> None:
    from lfr.pipeline import Deployment

    unused: Any = None  # refused before the watchlist or the store is looked at
    with pytest.raises(ValueError, match="every must be a whole number"):
        Deployment(
            source=[], watchlist=unused, store=unused, audit="u.log", every=every
        )


def test_watchlist_expires_in_the_past_is_refused(tmp_path: Path) -> None:
    key = lfr.Key.generate()
    key_file = key.save(tmp_path / "w.key")

    def create(expires: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "lfr", "watchlist", "create",
             str(tmp_path / "w.lfrw"), "--key-file", str(key_file),
             "--expires", expires],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    done = create("2020-01-01")
    assert done.returncode == 1
    assert "is in the past" in done.stderr
    assert not (tmp_path / "w.lfrw").exists()
    # Control: a future expiry creates it.
    done = create("30d")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "w.lfrw").exists()


def test_passphrase_without_a_terminal_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "LFR_PASSPHRASE"}
    argv = [sys.executable, "-m", "lfr", "watchlist", "list",
            str(tmp_path / "none.lfrw"), "--passphrase"]  # fmt: skip
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "--passphrase needs a terminal" in done.stderr
    assert "LFR_PASSPHRASE" in done.stderr
    # Control: with the variable set it goes on, to the missing file.
    done = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env={**env, "LFR_PASSPHRASE": "correct horse"}, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "needs a terminal" not in done.stderr


def test_run_help_says_when_a_folder_of_stills_can_alert() -> None:
    from lfr.tracking import TrackerConfig

    rule = TrackerConfig()
    done = subprocess.run(
        [sys.executable, "-m", "lfr", "run", "--help"], capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip
    text = " ".join(done.stdout.split())
    assert f"{rule.confirm_hits} of {rule.confirm_window} consecutive frames" in text
    assert "single, unrelated photos never alerts" in text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-31T12:00:00Z", datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ("2027-01-31T12:00z", datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ("2027-01-31T14:00+02:00", datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
        ("2027-01-31T12:00", datetime(2027, 1, 31, 12, tzinfo=timezone.utc)),
    ],
)
def test_times_read_alike_on_every_python(text: str, expected: datetime) -> None:
    # "Z" is read by datetime.fromisoformat only from Python 3.11 on.
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text", ["2027-01-31T25:00Z", "Z", "2027-01-31TZ", "yesterday"]
)
def test_a_time_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
        parse_time(text)
