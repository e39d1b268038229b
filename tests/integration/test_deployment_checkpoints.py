"""lfr.Deployment(checkpoints=...): checkpoints at the start, with every counters
record and at the end, to a file, a directory or a callable; the log verifies with
them, and one record cut from its end no longer does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

import lfr
from lfr.audit import Checkpoint, load_checkpoints, read_log, verify
from lfr.pipeline import Deployment

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def models(
    yunet_path: Path, embedder_path: Path
) -> tuple[lfr.FaceDetector, lfr.FaceEmbedder]:
    return lfr.FaceDetector(), lfr.FaceEmbedder()


def run(
    data: Path,
    models: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
    key: lfr.SigningKey,
    checkpoints: Path | Callable[[Checkpoint], None],
    *,
    frames: int = 4,
    interval: timedelta = timedelta(seconds=60),
) -> Path:
    detector, embedder = models
    data.mkdir()
    wl = lfr.Watchlist.create(data / "w.lfrw", lfr.Key.generate(), embedder=embedder)
    rng = np.random.default_rng(0)
    wl.add("R-0", rng.standard_normal((1, embedder.dim), dtype=np.float32))
    store = lfr.AlertStore(data / "a.db", lfr.Key.generate())
    dep = Deployment(
        source=[np.zeros((120, 160, 3), np.uint8) for _ in range(frames)],
        watchlist=wl,
        store=store,
        audit=data / "audit.log",
        signing_key=key,
        detector=detector,
        embedder=embedder,
        counters_interval=interval,
        checkpoints=checkpoints,
    )
    with dep:
        assert dep.wait(60.0)
    store.close()
    return data / "audit.log"


def test_start_and_end_checkpoints_to_a_file(
    tmp_path: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    key = lfr.SigningKey.generate()
    kept = tmp_path / "elsewhere" / "checkpoints.jsonl"
    kept.parent.mkdir()
    log = run(tmp_path / "data", models, key, kept)
    cps = load_checkpoints(kept)
    assert len(cps) == 2
    records, problems = read_log(log, key.public_key())
    assert problems == []
    started = next(r.seq for r in records if r.event == "deployment_started")
    assert started < cps[0].records < len(records)
    assert cps[-1].records == len(records)
    assert records[-1].event == "deployment_stopped"
    report = verify(log, key.public_key(), checkpoints=cps)
    assert report.ok, report.violations
    assert report.last_record_sha256 == cps[-1].head
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))  # the stop, cut off
    report = verify(log, key.public_key(), checkpoints=cps)
    assert [v.kind for v in report.violations] == ["checkpoint_mismatch"]


def test_a_checkpoint_with_every_counters_record_to_a_directory(
    tmp_path: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    key = lfr.SigningKey.generate()
    kept = tmp_path / "elsewhere"
    kept.mkdir()
    log = run(tmp_path / "data", models, key, kept, frames=5, interval=timedelta(0))
    records, _ = read_log(log, key.public_key())
    (file,) = kept.iterdir()
    assert file.name == f"{records[0].fields['log_id']}.checkpoints.jsonl"
    cps = load_checkpoints(file)
    counters = sum(r.event == "counters" for r in records)
    # One per counters record in the processing thread (the last counters, at
    # the stop, are covered by the end checkpoint), plus the start and the end.
    assert len(cps) == counters + 1
    assert [c.records for c in cps] == sorted(c.records for c in cps)
    assert verify(log, key.public_key(), checkpoints=cps).ok


def test_a_callable_gets_them_and_its_failure_is_not_fatal(
    tmp_path: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    key = lfr.SigningKey.generate()
    got: list[Checkpoint] = []
    log = run(tmp_path / "a", models, key, got.append)
    assert len(got) == 2
    assert verify(log, key.public_key(), checkpoints=got).ok

    def broken(cp: Checkpoint) -> None:
        raise RuntimeError("the checkpoint service is down")

    log = run(tmp_path / "b", models, key, broken)  # closes without an error
    records, problems = read_log(log, key.public_key())
    assert problems == []
    assert records[-1].event == "deployment_stopped"
    assert records[-1].fields["reason"] == "stopped"
