"""The watchlist and the alert store have separate keys; one key only by choice.

Enrolment staff hold the watchlist key, reviewers the store key: the one cannot
open the other's data. A deployment (and ``lfr run``) refuses one key for both
unless ``allow_shared_key`` / ``--allow-shared-key``, and records the choice in
``deployment_started`` (``keys``), which the deployment record shows. "The same
key" is judged by ``key_id``. Models are stand-ins here (no frames are
processed); ``tests/integration/test_run_faults.py`` runs ``lfr run`` on real
faces with two keys.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.audit import AuditLog, SigningKey, read_log, verify
from lfr.audit.report import render_markdown
from lfr.detect import Detections
from lfr.errors import SharedKeyError, WrongKeyError, WrongStoreKeyError
from lfr.pipeline.deployment import check_separate_keys
from lfr.sources import Frame, SourceStats

DIM = 8


class _NoFaces:
    """A detector that finds nothing (no frame reaches it: the source is empty)."""

    def detect(self, frame: npt.NDArray[np.uint8]) -> Detections:
        return Detections.empty()


class _Unused:
    """An embedder stand-in: only its model id and dimension are read."""

    model_id = "stand-in"
    dim = DIM

    def embed(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no face is embedded in these tests")


class _Empty:
    """A source with no frames: the deployment starts, audits and stops."""

    live = False

    @property
    def stats(self) -> SourceStats:
        return SourceStats()

    def frames(self) -> Iterator[Frame]:
        return iter(())

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


def _watchlist(path: Path, key: lfr.Key) -> lfr.Watchlist:
    wl = lfr.Watchlist.create(path, key, model_id=_Unused.model_id, dim=DIM)
    wl.add("S-1", np.ones((1, DIM), np.float32))
    wl.save()
    return wl


def _deployment(tmp_path: Path, wl_key: lfr.Key, store_key: lfr.Key, **kw: Any) -> Any:
    wl = _watchlist(tmp_path / "w.lfrw", wl_key)
    store = lfr.AlertStore(tmp_path / "a.db", store_key)
    signing = SigningKey.generate()
    dep = lfr.Deployment(
        source=_Empty(),
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=_NoFaces(),
        embedder=_Unused(),
        allow_unlocked=True,
        **kw,
    )
    return dep, store, signing


def test_the_watchlist_key_cannot_open_the_store(tmp_path: Path) -> None:
    wl_key, store_key = lfr.Key.generate(), lfr.Key.generate()
    lfr.AlertStore(tmp_path / "a.db", store_key).close()
    with pytest.raises(WrongStoreKeyError) as caught:
        lfr.AlertStore(tmp_path / "a.db", wl_key)
    assert isinstance(caught.value, WrongKeyError)
    assert isinstance(caught.value, lfr.AlertStoreError)
    message = str(caught.value)
    assert store_key.key_id in message
    assert wl_key.key_id in message
    assert "its own key" in message
    # The control: the store's own key opens it.
    lfr.AlertStore(tmp_path / "a.db", store_key).close()


def test_check_separate_keys_compares_key_ids() -> None:
    a, b = lfr.Key.generate(), lfr.Key.generate()
    assert check_separate_keys(a.key_id, b.key_id) is False
    with pytest.raises(SharedKeyError, match="allow_shared_key=True"):
        check_separate_keys(a.key_id, a.key_id)
    assert check_separate_keys(a.key_id, a.key_id, allow_shared=True) is True


def test_a_deployment_refuses_one_key_for_both(tmp_path: Path) -> None:
    key = lfr.Key.generate()
    with pytest.raises(SharedKeyError) as caught:
        _deployment(tmp_path, key, key)
    assert isinstance(caught.value, lfr.DeploymentError)
    assert "the same key" in str(caught.value)
    assert key.key_id in str(caught.value)
    assert not (tmp_path / "audit.log").exists()  # refused before anything started


def test_the_same_key_read_twice_is_the_same_key(tmp_path: Path) -> None:
    """Two Key objects from one file: refused too (compared by key_id)."""
    lfr.Key.generate().save(tmp_path / "k.key")
    first, second = (lfr.Key.from_file(tmp_path / "k.key") for _ in range(2))
    assert first is not second
    with pytest.raises(SharedKeyError):
        _deployment(tmp_path, first, second)


@pytest.mark.parametrize("shared", [False, True])
def test_the_start_records_the_keys_and_the_record_shows_them(
    tmp_path: Path, shared: bool
) -> None:
    wl_key = lfr.Key.generate()
    store_key = wl_key if shared else lfr.Key.generate()
    dep, store, signing = _deployment(
        tmp_path, wl_key, store_key, allow_shared_key=shared
    )
    assert dep.shared_key is shared
    with dep:
        assert dep.wait(60)
    store.close()
    records, problems = read_log(tmp_path / "audit.log", signing.public_key())
    assert problems == []
    (started,) = [r for r in records if r.event == "deployment_started"]
    assert started.fields["keys"] == ("shared" if shared else "separate")
    report = verify(tmp_path / "audit.log", signing.public_key())
    (summary,) = report.deployments
    assert summary.keys == ("shared" if shared else "separate")
    assert summary.to_json()["keys"] == summary.keys
    text = render_markdown(report)
    row = next(ln for ln in text.splitlines() if "Watchlist and alert store keys" in ln)
    assert ("ONE KEY FOR BOTH" in row) is shared
    assert ("separate" in row) is not shared


def test_keys_is_one_of_two_values_and_old_logs_show_not_recorded(
    tmp_path: Path,
) -> None:
    signing = SigningKey.generate()
    start: dict[str, Any] = {
        "deployment_id": "dep-1",
        "camera_ids": ["cam-1"],
        "location": "x",
        "purpose": "y",
        "authorised_by": "z",
        "watchlist_sha256": "0" * 64,
        "watchlist_size": 1,
        "model_id": "m",
        "threshold": 0.9,
        "policy": lfr.RetentionPolicy(),
        "lfr_version": lfr.__version__,
    }
    with AuditLog.create(tmp_path / "audit.log", signing) as log:
        with pytest.raises(ValueError, match="keys must be one of separate, shared"):
            log.append("deployment_started", **start, keys="same")
        log.append("deployment_started", **start)  # a log from before the field
    (summary,) = verify(tmp_path / "audit.log", signing.public_key()).deployments
    assert summary.keys is None
    text = render_markdown(verify(tmp_path / "audit.log", signing.public_key()))
    assert "| Watchlist and alert store keys | not recorded |" in text


# -- lfr run's options (refused before any model loads) ------------------------------


def _lfr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lfr", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("watchlist", "store"):
        lfr.Key.generate().save(keys / f"{name}.key")
    SigningKey.generate().save(keys / "audit.key")
    _watchlist(tmp_path / "w.lfrw", lfr.Key.from_file(keys / "watchlist.key"))
    return tmp_path


def _run_args(site: Path, *keys: str) -> list[str]:
    return [
        "run", "--source", str(site / "nothing"), "--watchlist", str(site / "w.lfrw"),
        *keys, "--store", str(site / "a.db"), "--audit", str(site / "audit.log"),
        "--signing-key", str(site / "keys" / "audit.key"),
    ]  # fmt: skip


def test_lfr_run_refuses_key_file_naming_the_two_options(site: Path) -> None:
    out = _lfr(*_run_args(site, "--key-file", str(site / "keys" / "watchlist.key")))
    assert out.returncode == 1
    assert "--key-file is ambiguous" in out.stderr
    assert "--watchlist-key" in out.stderr
    assert "--store-key" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (site / "a.db").exists()
    assert not (site / "audit.log").exists()


def test_lfr_run_needs_both_keys(site: Path) -> None:
    wl = ["--watchlist-key", str(site / "keys" / "watchlist.key")]
    out = _lfr(*_run_args(site, *wl))
    assert out.returncode == 1
    assert "--store-key" in out.stderr
    out = _lfr(*_run_args(site, "--store-key", str(site / "keys" / "store.key")))
    assert out.returncode == 1
    assert "--watchlist-key" in out.stderr
    assert not (site / "a.db").exists()


def test_lfr_run_refuses_one_key_file_for_both(site: Path) -> None:
    same = str(site / "keys" / "watchlist.key")
    out = _lfr(*_run_args(site, "--watchlist-key", same, "--store-key", same))
    assert out.returncode == 1
    assert "the same key" in out.stderr
    assert "--allow-shared-key" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (site / "a.db").exists()
    assert not (site / "audit.log").exists()


def test_lfr_run_refuses_a_copy_of_the_key_under_another_name(site: Path) -> None:
    copy = site / "keys" / "copy.key"
    copy.write_bytes((site / "keys" / "watchlist.key").read_bytes())
    copy.chmod(0o600)
    out = _lfr(
        *_run_args(
            site,
            "--watchlist-key",
            str(site / "keys" / "watchlist.key"),
            "--store-key",
            str(copy),
        )
    )
    assert out.returncode == 1
    assert "the same key" in out.stderr


def test_lfr_watchlist_and_alerts_take_their_one_key_by_either_name(
    site: Path,
) -> None:
    wl_key, store_key = site / "keys" / "watchlist.key", site / "keys" / "store.key"
    for option in ("--key-file", "--watchlist-key"):
        out = _lfr("watchlist", "list", str(site / "w.lfrw"), option, str(wl_key))
        assert out.returncode == 0, out.stderr
    lfr.AlertStore(site / "a.db", lfr.Key.from_file(store_key)).close()
    for option in ("--key-file", "--store-key"):
        out = _lfr(
            "alerts", "list", "--store", str(site / "a.db"), option, str(store_key)
        )
        assert out.returncode == 0, out.stderr
    # Enrolment staff's key does not open the store: a clear error, no traceback.
    out = _lfr(
        "alerts", "list", "--store", str(site / "a.db"), "--key-file", str(wl_key)
    )
    assert out.returncode == 1
    assert "was created with key" in out.stderr
    assert "its own key" in out.stderr
    assert "Traceback" not in out.stderr
