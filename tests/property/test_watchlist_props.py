"""Property tests of the .lfrw format: round trips, and every change detected."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lfr.errors import WatchlistError
from lfr.keys import Key
from lfr.watchlist import Watchlist

KEY = Key.generate()
text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
).filter(str.strip)
subjects = st.dictionaries(
    text,
    st.tuples(st.integers(1, 4), text, st.none() | text, st.integers(0, 2**32 - 1)),
    max_size=6,
)


def build(
    folder: Path, dim: int, content: dict[str, tuple[int, str, str | None, int]]
) -> Watchlist:
    wl = Watchlist.create(folder / "w.lfrw", KEY, model_id="model", dim=dim)
    for sid, (n, reason, source, seed) in content.items():
        rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
        rows[:, 0] += 0.1  # never a zero vector
        wl.add(sid, rows, reason=reason, source=source, added_by="tester")
    wl.save()
    return wl


@settings(max_examples=40)
@given(dim=st.integers(1, 64), content=subjects)
def test_round_trip_equals_the_original(
    dim: int, content: dict[str, tuple[int, str, str | None, int]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        wl = build(Path(folder), dim, content)
        again = Watchlist.open(wl.path, KEY, model_id="model")
        assert again.subjects() == wl.subjects()
        assert again.dim == dim
        assert again.templates == wl.templates
        for sid in content:
            np.testing.assert_array_equal(again.templates_of(sid), wl.templates_of(sid))
        again.destroy()
        wl.destroy()


@settings(max_examples=150)
@given(
    content=subjects,
    where=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_any_single_byte_change_is_detected(
    content: dict[str, tuple[int, str, str | None, int]], where: float, flip: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        wl = build(Path(folder), 8, content)
        raw = bytearray(wl.path.read_bytes())
        raw[int(where * len(raw))] ^= flip
        wl.path.write_bytes(bytes(raw))
        try:
            Watchlist.open(wl.path, KEY, model_id="model")
        except WatchlistError:
            pass
        else:
            raise AssertionError(
                f"a change at byte {int(where * len(raw))} went unseen"
            )
        assert wl.path.read_bytes() == bytes(raw)  # opening never writes
        wl.destroy()
