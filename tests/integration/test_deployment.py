"""lfr.Deployment end to end: real models, real files, real audit logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr import _core
from lfr.pipeline import Deployment, DeploymentError

pytestmark = pytest.mark.data

U8 = npt.NDArray[np.uint8]
WAIT_S = 60.0  # limits on waits that must end; never a speed assertion


@pytest.fixture(scope="module")
def models(
    yunet_path: Path, embedder_path: Path
) -> tuple[lfr.FaceDetector, lfr.FaceEmbedder]:
    return lfr.FaceDetector(), lfr.FaceEmbedder()


def random_watchlist(
    folder: Path, embedder: lfr.FaceEmbedder, key: lfr.Key | None = None
) -> lfr.Watchlist:
    key = key or lfr.Key.generate()
    wl = lfr.Watchlist.create(folder / "w.lfrw", key, embedder=embedder)
    rng = np.random.default_rng(0)
    for i in range(5):
        wl.add(f"R-{i}", rng.standard_normal((1, embedder.dim), dtype=np.float32))
    wl.save()
    return wl


def scene(photo: Path, x: int = 500) -> U8:
    canvas = np.full((720, 1280, 3), 90, np.uint8)
    image = cv2.imread(str(photo))
    assert image is not None
    canvas[200:450, x : x + 250] = image
    return canvas


def test_a_watchlist_from_another_model_is_refused(
    tmp_path: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    detector, embedder = models
    wl = lfr.Watchlist.create(
        tmp_path / "w.lfrw", lfr.Key.generate(), model_id="other", dim=embedder.dim
    )
    store = lfr.AlertStore(tmp_path / "a.db", lfr.Key.generate())
    key = lfr.SigningKey.generate()
    dep = Deployment(
        source=[np.zeros((64, 64, 3), np.uint8)],
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=key,
        detector=detector,
        embedder=embedder,
    )
    with pytest.raises(DeploymentError, match="embedder 'other'"):
        dep.start()
    assert not (tmp_path / "audit.log").exists()
    assert len(store) == 0


def test_a_corrupt_video_stops_the_start_cleanly(
    tmp_path: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    detector, embedder = models
    video = tmp_path / "broken.mp4"
    # Seeded noise that FFmpeg cannot open (some random bytes probe as raw h263).
    video.write_bytes(
        np.random.default_rng(7).integers(0, 256, 50_000, np.uint8).tobytes()
    )
    key = lfr.SigningKey.generate()
    store = lfr.AlertStore(tmp_path / "a.db", lfr.Key.generate())
    dep = Deployment(
        source=video,
        watchlist=random_watchlist(tmp_path, embedder),
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=key,
        detector=detector,
        embedder=embedder,
    )
    with pytest.raises(DeploymentError, match="cannot start"):
        dep.start()
    report = lfr.audit.verify(tmp_path / "audit.log", key.public_key())
    assert report.ok, report.violations
    events = [
        r.event for r in lfr.audit.read_log(tmp_path / "audit.log", key.public_key())[0]
    ]
    assert events[-2:] == ["anomaly", "deployment_stopped"]


def test_no_match_leaves_no_trace_in_memory(
    tmp_path: Path, lfw_dir: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    """Promise 1 through the whole pipeline: the canary frame, its chip, model input
    and embedding are nowhere in this process's memory after a no-match decision."""
    from lfr.embed import align_into, chip_to_tensor

    detector, embedder = models
    key = np.frombuffer(os.urandom(64), dtype=np.uint8)
    rng = np.random.default_rng()
    photo = sorted((lfw_dir / "identities").glob("*/*.jpg"))[11]
    side = 150
    wl = random_watchlist(tmp_path, embedder)
    store = lfr.AlertStore(tmp_path / "a.db", lfr.Key.generate())

    def masked(view: np.ndarray) -> np.ndarray:
        raw = view.reshape(-1).view(np.uint8)
        out = np.empty_like(raw)
        np.bitwise_xor(raw, np.resize(key, raw.size), out=out)
        return out

    with lfr.SecureBuffer(
        720 * 1280 * 3 + side * side * 3 + 3 * side * side * 4
    ) as work:
        raw = work.array(np.uint8)
        frame = raw[: 720 * 1280 * 3].reshape(720, 1280, 3)
        decoded = scene(photo)
        np.copyto(frame, decoded)
        decoded.fill(0)
        noise = rng.integers(0, 4, size=frame.shape, dtype=np.uint8)
        np.add(frame, noise, out=frame)
        noise.fill(0)
        del decoded, noise
        faces = detector.detect(frame)
        assert len(faces) >= 1
        chip = raw[720 * 1280 * 3 : 720 * 1280 * 3 + side * side * 3].reshape(
            side, side, 3
        )
        tensor = (
            raw[720 * 1280 * 3 + side * side * 3 :]
            .view(np.float32)
            .reshape(3, side, side)
        )
        align_into(frame, embedder._transforms(frame, faces)[0], chip)
        chip_to_tensor(chip, tensor)
        vecs = embedder.embed(frame, faces)
        references = [masked(a) for a in (frame, chip, tensor, vecs[:1])]
        del vecs
        signing = lfr.SigningKey.generate()
        with Deployment(
            source=[frame],
            watchlist=wl,
            store=store,
            audit=tmp_path / "audit.log",
            signing_key=signing,
            detector=detector,
            embedder=embedder,
        ) as dep:
            dep.wait()
            stats = dep.stats()
        work.wipe()
        del raw, frame, chip, tensor
    assert stats.frames == 1
    assert stats.faces >= 1
    assert stats.alerts == 0
    hits = _core.scan_memory(references, key.tobytes())[0]
    names = ("frame", "chip", "tensor", "embedding")
    assert hits == [], [f"{names[s]} at {a:#x} in {m}" for s, _, a, m in hits[:20]]
    assert len(store) == 0


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    import cv2, numpy as np
    import lfr
    from lfr.pipeline import Deployment, DeploymentError

    folder, photo = Path(sys.argv[1]), sys.argv[2]
    key = lfr.Key.from_file(folder / "store.key")
    wl = lfr.Watchlist.open(folder / "w.lfrw", lfr.Key.from_file(folder / "wl.key"))
    store = lfr.AlertStore(folder / "alerts.db", key)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Files may not grow past 256 KiB from here on: the store fills up first.
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))
    image = cv2.imread(photo)
    frames = []
    for x in range(0, 1000, 200):  # five far-apart tracks: five alerts
        canvas = np.full((720, 1280, 3), 90, np.uint8)
        canvas[200:450, x : x + 250] = image
        frames += [canvas] * 3
    try:
        with Deployment(source=frames, watchlist=wl, store=store,
                        audit=folder / "audit.log",
                        signing_key=lfr.SigningKey.load(folder / "audit.key")) as dep:
            for alert in dep.alerts():
                print("stored", alert.alert_id, flush=True)
    except DeploymentError as exc:
        print("stopped:", exc, flush=True)
    store.close()
    """
)


def test_a_full_disk_stops_cleanly_and_keeps_what_was_stored(
    tmp_path: Path, lfw_dir: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    detector, embedder = models
    person = sorted(p for p in (lfw_dir / "identities").iterdir())[0]
    photos = sorted(person.glob("*.jpg"))
    key = lfr.Key.generate()
    key.save(tmp_path / "store.key")
    wl_key = lfr.Key.generate()  # the watchlist's own key
    wl_key.save(tmp_path / "wl.key")
    signing = lfr.SigningKey.generate()
    signing.save(tmp_path / "audit.key")
    wl = lfr.Watchlist.create(tmp_path / "w.lfrw", wl_key, embedder=embedder)
    wl.enroll("S-1", photos[:1], detector=detector, embedder=embedder)
    wl.save()
    # A big crop per alert: the photo scaled up, so a few alerts fill 256 KiB.
    big = tmp_path / "big.png"
    image = cv2.imread(str(photos[1]))
    assert image is not None
    cv2.imwrite(str(big), cv2.resize(image, (250, 250)))
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path), str(big)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    stored = [
        line.split()[1] for line in out.stdout.splitlines() if line.startswith("stored")
    ]
    assert "stopped:" in out.stdout, out.stdout
    with lfr.AlertStore(tmp_path / "alerts.db", key) as store:
        assert [a.alert_id for a in store.alerts()] == stored
        for alert_id in stored:
            assert (
                cv2.imdecode(np.frombuffer(store._crop(alert_id), np.uint8), 1)
                is not None
            )
    report = lfr.audit.verify(tmp_path / "audit.log", signing.public_key())
    assert report.records > 3
    assert not [v for v in report.violations if v.kind == "integrity"]


def test_lfr_run_stops_cleanly_on_ctrl_c(
    tmp_path: Path, lfw_dir: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    _, embedder = models
    key = lfr.Key.generate()
    key.save(tmp_path / "k.key")
    lfr.Key.generate().save(tmp_path / "store.key")  # the alert store's own key
    random_watchlist(tmp_path, embedder, key)
    photos = sorted((lfw_dir / "unknowns").glob("*.jpg"))[:20]
    frames = tmp_path / "frames"
    frames.mkdir()
    keys = tmp_path / "keys"  # not the log's folder: lfr run refuses that
    keys.mkdir()
    signing = lfr.SigningKey.generate()
    signing.save(keys / "audit.key")
    for i, photo in enumerate(photos):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), scene(photo, 100 + (i % 5) * 200))
    for i in range(20, 3000):  # long enough to be interrupted (status every 5 s)
        (frames / f"{i:04d}.jpg").symlink_to(frames / f"{i % 20:04d}.jpg")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lfr",
            "run",
            "--source",
            str(frames),
            "--watchlist",
            str(tmp_path / "w.lfrw"),
            "--watchlist-key",
            str(tmp_path / "k.key"),
            "--store-key",
            str(tmp_path / "store.key"),
            "--store",
            str(tmp_path / "a.db"),
            "--audit",
            str(tmp_path / "audit.log"),
            "--signing-key",
            str(keys / "audit.key"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # wait for the first status line
        seen.append(line)
        if "fps" in line:
            break
    assert seen, "no status line"
    assert "fps" in seen[-1], seen
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "interrupted" in err
    public = signing.public_key()
    records, problems = lfr.audit.read_log(tmp_path / "audit.log", public)
    assert problems == []
    # The watchlist's destruction first: a kill between the two leaves it recorded.
    assert records[-2].event == "watchlist_destroyed"
    assert records[-1].event == "deployment_stopped"
    frames_done = sum(
        r.fields["frames_processed"] for r in records if r.event == "counters"
    )
    assert 0 < frames_done < 3000


def test_the_stored_crop_is_the_tracks_best_view(
    tmp_path: Path, lfw_dir: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    detector, embedder = models
    person = sorted(p for p in (lfw_dir / "identities").iterdir())[0]
    photos = sorted(person.glob("*.jpg"))
    key = lfr.Key.generate()
    wl = lfr.Watchlist.create(tmp_path / "w.lfrw", key, embedder=embedder)
    wl.enroll("S-1", photos[:1], detector=detector, embedder=embedder)
    sharp = scene(photos[0])
    soft = np.asarray(cv2.GaussianBlur(sharp, (0, 0), 1.2), np.uint8)
    frames = [soft, soft, soft, sharp, sharp]  # one track: alert on soft, then better
    store = lfr.AlertStore(tmp_path / "a.db", lfr.Key.generate())
    signing = lfr.SigningKey.generate()
    with Deployment(
        source=frames,
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=detector,
        embedder=embedder,
    ) as dep:
        alerts = list(dep.alerts())
    assert len(alerts) == 1
    stored = store.get(alerts[0].alert_id)
    assert stored.score > alerts[0].score  # replaced by a sharp frame's view
    crop = store._crop_image(stored.alert_id)
    x1, y1, x2, y2 = (int(v) for v in stored.box)
    lap = cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    soft_crop = soft[max(0, y1 - 20) : y2 + 20, max(0, x1 - 20) : x2 + 20]
    soft_lap = cv2.Laplacian(
        cv2.cvtColor(soft_crop, cv2.COLOR_BGR2GRAY), cv2.CV_64F
    ).var()
    assert lap > soft_lap


def test_a_blocked_on_alert_holds_up_neither_frames_nor_storage(
    tmp_path: Path, lfw_dir: Path, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    """``on_alert`` blocks until every frame is processed: nothing waits for it."""
    detector, embedder = models
    person = sorted(p for p in (lfw_dir / "identities").iterdir())[0]
    photos = sorted(person.glob("*.jpg"))
    key = lfr.Key.generate()
    wl = lfr.Watchlist.create(tmp_path / "w.lfrw", key, embedder=embedder)
    wl.enroll("S-1", photos[:1], detector=detector, embedder=embedder)
    frames = []
    for x in range(0, 1000, 200):  # five far-apart tracks: five alerts
        frames += [scene(photos[1], x)] * 3
    entered, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def blocked(alert: lfr.Alert) -> None:
        calls.append(alert.alert_id)
        entered.set()
        release.wait(WAIT_S)  # bounded: the test cannot hang

    store = lfr.AlertStore(tmp_path / "alerts.db", lfr.Key.generate())
    dep = Deployment(
        source=frames,
        watchlist=wl,
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=lfr.SigningKey.generate(),
        detector=detector,
        embedder=embedder,
        on_alert=blocked,
    )
    dep.start()
    try:
        assert entered.wait(WAIT_S), "no alert reached on_alert"
        assert dep.wait(WAIT_S)  # every frame processed ...
        streamed = list(dep.alerts(timeout=WAIT_S))
        # ... and every alert stored and yielded, while the first callback still
        # blocks (the negative control: it really is blocked).
        assert not release.is_set()
        assert calls == [streamed[0].alert_id]
        assert dep.stats().frames == len(frames)
        assert len(streamed) == dep.stats().alerts == 5
        assert len(store) == 5
    finally:
        release.set()
        dep.close()
    assert calls == [a.alert_id for a in streamed]
    store.close()
