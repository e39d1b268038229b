"""lfr.Watchlist and its .lfrw file: round trips, tampering, keys, expiry, atomicity."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.errors import RetentionError, WatchlistError, WrongKeyError
from lfr.keys import Key, Passphrase, ScryptParams
from lfr.watchlist import Watchlist

F32 = npt.NDArray[np.float32]
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
LAPSES = datetime(2099, 1, 1, tzinfo=timezone.utc)  # S-2's entry


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def unit(rows: F32) -> F32:
    out: F32 = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def sample(tmp_path: Path, key: Key, clock: Clock | None = None) -> Watchlist:
    rng = np.random.default_rng(1)
    wl = Watchlist.create(tmp_path / "w.lfrw", key, model_id="m-1", dim=16, clock=clock)
    wl.add(
        "S-1",
        rng.normal(size=(3, 16)).astype(np.float32),
        reason="wanted",
        source="custody 1",
        added_by="PC 1",
    )
    wl.add(
        "S-2",
        rng.normal(size=16).astype(np.float32),
        reason="missing person",
        source="family photo",
        added_by="PC 2",
        expires=LAPSES,
    )
    wl.save()
    return wl


@pytest.fixture
def key() -> Key:
    return Key.generate()


def test_round_trip(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    again = Watchlist.open(wl.path, key, model_id="m-1")
    assert again.subjects() == wl.subjects()
    assert len(again) == 2
    assert "S-1" in again
    assert again.templates == 4
    for sid in ("S-1", "S-2"):
        np.testing.assert_array_equal(again.templates_of(sid), wl.templates_of(sid))
    norms = np.linalg.norm(again.templates_of("S-1"), axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-6)
    import hashlib

    assert again.sha256 == wl.sha256 == hashlib.sha256(wl.path.read_bytes()).hexdigest()
    header = Watchlist.info(wl.path)
    assert (header.subjects, header.templates, header.dim) == (2, 4, 16)
    assert header.key_id == key.key_id
    assert header.model_id == "m-1"


def test_file_holds_no_template_or_record_in_clear(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    raw = wl.path.read_bytes()
    for sid in ("S-1", "S-2"):
        for row in wl.templates_of(sid):
            for start in range(0, 16 - 3, 4):  # every 16-byte run of each template
                assert row[start : start + 4].tobytes() not in raw
    for text in (b"S-1", b"wanted", b"custody 1", b"PC 2", b"family photo"):
        assert text not in raw


def test_wrong_key_says_so_and_leaves_the_file(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    before = wl.path.read_bytes()
    other = Key.generate()
    with pytest.raises(WrongKeyError, match=f"{key.key_id}.*{other.key_id}"):
        Watchlist.open(wl.path, other)
    with pytest.raises(WatchlistError):
        Watchlist.open(wl.path, other)
    assert wl.path.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[:5], "not an lfr watchlist"),
        (lambda b: b[:30], "truncated"),
        (lambda b: b[:-1], "damaged or has been altered"),
        (lambda b: b[:8] + b"\x02\x00" + b[10:], "format version 2"),
        (lambda b: b"GIF89a" + b[6:], "not an lfr watchlist"),
        (lambda b: b"", "not an lfr watchlist"),
    ],
)
def test_damaged_files(tmp_path: Path, key: Key, change: object, message: str) -> None:
    wl = sample(tmp_path, key)
    bad = tmp_path / "bad.lfrw"
    bad.write_bytes(change(wl.path.read_bytes()))  # type: ignore[operator]
    before = bad.read_bytes()
    with pytest.raises(WatchlistError, match=message):
        Watchlist.open(bad, key)
    assert bad.read_bytes() == before


def test_foreign_model_is_refused(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    with pytest.raises(WatchlistError, match="embedder 'm-1', not 'm-2'"):
        Watchlist.open(wl.path, key, model_id="m-2")
    with pytest.raises(WatchlistError, match="re-enrol"):
        wl.check_model("m-2")


def test_passphrase_watchlists(tmp_path: Path) -> None:
    params = ScryptParams.fresh(n=2**10)
    key = Key.from_passphrase("a long passphrase", params)
    wl = Watchlist.create(tmp_path / "p.lfrw", key, model_id="m", dim=4)
    assert Watchlist.info(wl.path).kdf == params
    again = Watchlist.open(wl.path, Passphrase("a long passphrase"))
    assert again.key_id == key.key_id
    with pytest.raises(WrongKeyError, match="wrong passphrase"):
        Watchlist.open(wl.path, Passphrase("a long passphrasE"))
    keyfile = Watchlist.create(tmp_path / "k.lfrw", Key.generate(), model_id="m", dim=4)
    with pytest.raises(WatchlistError, match="not a passphrase"):
        Watchlist.open(keyfile.path, Passphrase("x"))


def test_add_validates(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    good = np.ones((1, 16), np.float32)
    with pytest.raises(ValueError, match="already"):
        wl.add("S-1", good)
    with pytest.raises(TypeError, match="float32"):
        wl.add("S-9", good.astype(np.float64))
    with pytest.raises(ValueError, match="shape"):
        wl.add("S-9", np.ones((1, 15), np.float32))
    for bad in (np.full((1, 16), np.nan, np.float32), np.zeros((1, 16), np.float32)):
        with pytest.raises(ValueError, match="finite, non-zero"):
            wl.add("S-9", bad)
    with pytest.raises(ValueError, match="non-empty"):
        wl.add("S-9", good, reason="  ")
    with pytest.raises(ValueError, match="timezone"):
        wl.add("S-9", good, expires=datetime(2030, 1, 1))
    assert "S-9" not in wl
    assert wl.templates == 4


def test_remove_and_save(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    kept = wl.templates_of("S-2")
    wl.remove("S-1")
    with pytest.raises(KeyError):
        wl.remove("S-1")
    wl.save()
    again = Watchlist.open(wl.path, key)
    assert [s.subject_id for s in again.subjects()] == ["S-2"]
    np.testing.assert_array_equal(again.templates_of("S-2"), kept)


def test_expiry(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key, Clock())
    again = Watchlist.open(wl.path, key, clock=Clock(LAPSES))
    assert [s.subject_id for s in again.subjects()] == ["S-1"]
    short = Watchlist.create(
        tmp_path / "s.lfrw",
        key,
        model_id="m",
        dim=4,
        expires=T0 + timedelta(hours=1),
        clock=Clock(),
    )
    with pytest.raises(RetentionError, match="expired"):
        Watchlist.open(short.path, key, clock=Clock(T0 + timedelta(hours=2)))


def test_save_is_atomic(
    tmp_path: Path, key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    wl = sample(tmp_path, key)
    before = wl.path.read_bytes()
    wl.remove("S-1")

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space"):
        wl.save()
    assert wl.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.lfrw"]


def test_create_refuses_to_overwrite(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    with pytest.raises(FileExistsError):
        Watchlist.create(wl.path, key, model_id="m", dim=4)
    with pytest.raises(ValueError, match="embedder"):
        Watchlist.create(tmp_path / "x.lfrw", key)


def test_matcher_finds_subjects(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    matcher = wl.matcher()
    assert len(matcher) == 4
    assert matcher.secure
    query = wl.templates_of("S-2")
    ids, scores = matcher.search(query, k=1)
    assert wl.subject_ids(ids[:, 0]) == ["S-2"]
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert wl.subject_ids([-1]) == [None]


def test_destroy(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    wl.destroy()
    assert wl.destroyed
    assert len(wl) == 0
    assert "destroyed" in repr(wl)
    with pytest.raises(WatchlistError, match="destroyed"):
        wl.templates_of("S-1")
    assert wl.path.exists()
    again = Watchlist.open(wl.path, key)
    again.destroy(delete_file=True)
    assert not wl.path.exists()


def test_reprs_hold_no_subjects(tmp_path: Path, key: Key) -> None:
    wl = sample(tmp_path, key)
    assert "S-1" not in repr(wl)
    assert "wanted" not in repr(wl)
    assert lfr.Watchlist is Watchlist
