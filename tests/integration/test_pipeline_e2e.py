"""The live pipeline end to end: a composed video with ground truth, a real network
stream that is cut and comes back, and bad input.

The video is built at test time by :mod:`lfr.demo` from ``lfw-dev`` photos: 4
people on the watchlist (enrolled from photos other than the ones the video shows)
and 4 who are not, crossing 1280x720 frames at 10 fps at different sizes, several
at a time. The deployment runs with the default threshold and tracking; every
alert is mapped to the appearance (ground-truth track) it belongs to by the frame
it was raised on and its box.

Measured on this video (``SEED = 0``; int8 embedder, the default on x86 with
VNNI): the enrolled people score 0.966 to 0.990 in every frame they are shown
(threshold 0.945), the people not enrolled at most 0.885. Over seeds 0 to 5 (24
enrolled and 24 unknown appearances) every enrolled appearance scored at least
0.945 and every unknown one at most 0.932; the closest, seed 1's Alvaro_Uribe,
peaks at 0.946, right at the threshold: the test is not tuned to its seed, but
some seeds are close calls. :func:`appearance_scores` measures the scores
independently of the pipeline so that a failure says which it is.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

import lfr
from lfr.audit import Record, read_log
from lfr.demo import DemoTruth, compose_video, pick_people
from lfr.detect import Detections
from lfr.pipeline import DEFAULT_THRESHOLD, Deployment, DeploymentError
from lfr.tracking import TrackerConfig, iou_matrix
from tests.support.enrol import enrol_usable
from tests.support.stream_server import Server, free_port, listening

pytestmark = pytest.mark.data

U8 = npt.NDArray[np.uint8]

SEED = 0  # of pick_people and compose_video
ENROLLED, UNKNOWN = 4, 4
SIZE = (1280, 720)
FPS = 10
WAIT_S = 60.0  # generous limits on waits that must end; never a speed assertion
MATCH_IOU = 0.5  # an alert's box against the ground-truth box of its frame


class CountingDetector(lfr.FaceDetector):
    """The default detector, counting its calls.

    The pipeline detects once per processed frame and raises a frame's alerts
    after detecting it; its writer thread stores them shortly after, so
    ``calls - 1`` in ``on_alert`` is at or a few frames after the position of the
    alert's frame among the frames processed (its index for a file).
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def detect(self, frame: U8) -> Detections:
        self.calls += 1
        return super().detect(frame)


@dataclass(frozen=True)
class Cast:
    """The composed video, its ground truth and the watchlist of its people."""

    key: lfr.Key
    watchlist: Path  # saved; each test opens it (a deployment destroys its copy)
    video: Path
    truth: DemoTruth
    subjects: tuple[str | None, ...]  # per person of the truth: subject id or None

    def subject(self, appearance: int) -> str | None:
        return self.subjects[self.truth.appearances[appearance].person]

    def open_watchlist(self) -> lfr.Watchlist:
        return lfr.Watchlist.open(self.watchlist, self.key)


@pytest.fixture(scope="module")
def models(
    yunet_path: Path, embedder_path: Path
) -> tuple[lfr.FaceDetector, lfr.FaceEmbedder]:
    return lfr.FaceDetector(), lfr.FaceEmbedder()


@pytest.fixture(scope="module")
def cast(
    lfw_dir: Path,
    models: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
    tmp_path_factory: pytest.TempPathFactory,
) -> Cast:
    detector, embedder = models
    folder = tmp_path_factory.mktemp("e2e")
    chosen = pick_people(lfw_dir, enrolled=ENROLLED, unknown=UNKNOWN, seed=SEED)
    key = lfr.Key.generate()
    wl = lfr.Watchlist.create(folder / "w.lfrw", key, embedder=embedder)
    for name, photos in chosen.enrol.items():
        enrolled = enrol_usable(wl, name, photos, detector, embedder)
        assert enrolled, f"no enrolment photo of {name} shows exactly one usable face"
    assert len(wl) == ENROLLED
    wl.save()
    wl.destroy()
    people = [*chosen.probe.values(), *([p] for p in chosen.unknown)]
    video = folder / "demo.avi"
    truth = compose_video(people, video, size=SIZE, fps=FPS, seed=SEED)
    # What the checks below need of the video.
    assert len(truth.appearances) == ENROLLED + UNKNOWN
    assert sorted(a.person for a in truth.appearances) == list(range(len(people)))
    assert max(len(truth.boxes_at(f)) for f in range(truth.frames)) >= 2
    widths = [b[2] - b[0] for a in truth.appearances for b in a.boxes]
    assert max(widths) - min(widths) > 60  # near and far faces
    confirm = TrackerConfig().confirm_hits
    assert all(len(a.boxes) > 2 * confirm for a in truth.appearances)
    return Cast(
        key=key,
        watchlist=folder / "w.lfrw",
        video=video,
        truth=truth,
        subjects=(*chosen.probe, *(None for _ in chosen.unknown)),
    )


def read_frames(video: Path, limit: int | None = None) -> Iterator[U8]:
    capture = cv2.VideoCapture(str(video))
    try:
        count = 0
        while limit is None or count < limit:
            ok, frame = capture.read()
            if not ok:
                return
            yield np.asarray(frame, np.uint8)
            count += 1
    finally:
        capture.release()


def locate_at(truth: DemoTruth, frame: int, box: npt.ArrayLike) -> int | None:
    """The appearance whose box in ``frame`` is ``box`` (IoU >= MATCH_IOU)."""
    shown = [
        (k, b)
        for k, a in enumerate(truth.appearances)
        if (b := a.box_at(frame)) is not None
    ]
    if not shown:
        return None
    iou = iou_matrix(np.asarray(box, np.float64)[None], [b for _, b in shown])[0]
    best = int(iou.argmax())
    return shown[best][0] if iou[best] >= MATCH_IOU else None


#: Alerts are stored by a writer thread: ``on_alert`` runs up to this many frames
#: after the frame the alert was raised on.
WRITER_LAG = 16


def locate(truth: DemoTruth, frame: int, box: npt.ArrayLike) -> int | None:
    """The appearance an alert seen while ``frame`` was processed was raised on."""
    for earlier in range(frame, max(-1, frame - WRITER_LAG - 1), -1):
        k = locate_at(truth, earlier, box)
        if k is not None:
            return k
    return None


@dataclass
class Scores:
    """What the models alone make of the video (no pipeline, no tracking)."""

    faces: int = 0  # detections
    skipped: int = 0  # detections the quality gate rejects
    stray: int = 0  # detections on no appearance
    # per appearance: (frame, passed the gate, best subject, its score)
    seen: dict[int, list[tuple[int, bool, str | None, float]]] = field(
        default_factory=dict
    )

    def best(self, appearance: int, subject: str | None = None) -> float | None:
        """The highest score of a face of the appearance (against ``subject``)."""
        values = [
            score
            for _, ok, s, score in self.seen[appearance]
            if ok and (subject is None or s == subject)
        ]
        return max(values, default=None)

    def describe(self, cast: Cast) -> str:
        lines = []
        for k, entries in self.seen.items():
            a = cast.truth.appearances[k]
            own = [s for _, ok, subj, s in entries if ok and subj == cast.subject(k)]
            lines.append(
                f"appearance {k} ({cast.subject(k) or 'not enrolled'}, frames "
                f"{a.first_frame}-{a.last_frame}): {len(entries)} faces, "
                f"{sum(ok for _, ok, _, _ in entries)} passed the gate, own "
                f"score {min(own, default=0):.3f}-{max(own, default=0):.3f}, best "
                f"of any subject {self.best(k) or 0:.3f}"
            )
        lines.append(f"{self.stray} detections on nobody")
        return "\n".join(lines)


@pytest.fixture(scope="module")
def scores(cast: Cast, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]) -> Scores:
    detector, embedder = models
    wl = cast.open_watchlist()
    matcher = wl.matcher()
    gate = lfr.QualityGate()
    out = Scores(seen={k: [] for k in range(len(cast.truth.appearances))})
    for index, image in enumerate(read_frames(cast.video)):
        faces = detector.detect(image)
        if not len(faces):
            continue
        passed = gate.assess(image, faces).passed
        ids, values = matcher.search(embedder.embed(image, faces), k=1)
        subjects = wl.subject_ids(ids[:, 0])
        out.faces += len(faces)
        out.skipped += int((~passed).sum())
        for j in range(len(faces)):
            k = locate_at(cast.truth, index, faces.boxes[j])
            if k is None:
                out.stray += 1
            else:
                score = float(values[j, 0])
                out.seen[k].append((index, bool(passed[j]), subjects[j], score))
    wl.destroy()
    print(out.describe(cast))
    return out


def audit_events(path: Path, key: lfr.SigningKey) -> list[Record]:
    records, problems = read_log(path, key.public_key())
    assert problems == [], problems
    return records


def check_audit(
    path: Path, key: lfr.SigningKey, dep: Deployment, store: lfr.AlertStore
) -> list[Record]:
    """The log verifies and agrees with the deployment and the store."""
    report = lfr.audit.verify(path, key.public_key(), now=datetime.now(timezone.utc))
    assert report.ok, report.violations
    stats = dep.stats()
    (summary,) = report.deployments
    assert summary.deployment_id == dep.deployment_id
    assert summary.stopped is not None
    assert (
        summary.frames_processed,
        summary.faces_detected,
        summary.faces_skipped,
        summary.faces_wiped,
        summary.alerts,
    ) == (stats.frames, stats.faces, stats.skipped, stats.wiped, stats.alerts)
    assert summary.unreviewed == stats.alerts
    check_auditor_policy(path, key)
    records = audit_events(path, key)
    assert [r.event for r in records[:3]] == [
        "log_created",
        "deployment_started",
        "watchlist_loaded",
    ]
    assert records[1].fields["threshold"] == dep.threshold
    assert records[1].fields["keys"] == "separate"  # the store's key is its own
    assert [r.event for r in records[-2:]] == [
        "watchlist_destroyed",
        "deployment_stopped",
    ]
    raised = [r.fields["alert_id"] for r in records if r.event == "alert_raised"]
    assert raised == [a.alert_id for a in store.alerts()]
    assert stats.faces == stats.skipped + stats.wiped + stats.alerts
    assert not stats.running
    return records


def check_auditor_policy(path: Path, key: lfr.SigningKey) -> None:
    """The pipeline runs within the default policy, and no stricter one passes."""
    now = datetime.now(timezone.utc)
    report = lfr.audit.verify(path, key.public_key(), now=now, policy=lfr.Policy())
    assert report.ok, report.violations
    assert report.policy == lfr.Policy().to_json()
    stricter = lfr.Policy(alert_ttl=timedelta(hours=1))
    report = lfr.audit.verify(path, key.public_key(), now=now, policy=stricter)
    looser = [v for v in report.violations if v.kind == "looser_policy"]
    assert [(v.record, "alert_ttl was 1 day" in v.message) for v in looser] == [
        (1, True)
    ]


def check_crops(store: lfr.AlertStore) -> None:
    """Every stored alert's crop decrypts to an image around its face box."""
    for alert in store.alerts():
        crop = store._crop_image(alert.alert_id)
        x1, y1, x2, y2 = alert.box
        assert crop.ndim == 3
        assert crop.shape[2] == 3
        # The crop reaches a quarter of the box beyond each side, within the frame.
        assert x2 - x1 <= crop.shape[1] <= 1.5 * (x2 - x1) + 2
        assert y2 - y1 <= crop.shape[0] <= 1.5 * (y2 - y1) + 2
        assert crop.std() > 5  # a face, not a blank


# --- 1. the composed video, from its file ----------------------------------------


def test_every_enrolled_person_alerts_once_and_nobody_else(
    tmp_path: Path,
    cast: Cast,
    scores: Scores,
    models: tuple[lfr.FaceDetector, lfr.FaceEmbedder],
) -> None:
    _, embedder = models
    detector = CountingDetector()
    store = lfr.AlertStore(tmp_path / "alerts.db", lfr.Key.generate())
    signing = lfr.SigningKey.generate()
    raised: list[tuple[int, lfr.Alert]] = []
    dep = Deployment(
        source=cast.video,
        watchlist=cast.open_watchlist(),
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=detector,
        embedder=embedder,
        camera_id="cam-e2e",
        on_alert=lambda alert: raised.append((detector.calls - 1, alert)),
    )
    assert dep.threshold == DEFAULT_THRESHOLD
    with dep:
        streamed = list(dep.alerts(timeout=WAIT_S))
        assert dep.wait(WAIT_S)
    stats = dep.stats()
    truth = cast.truth
    diagnosis = scores.describe(cast)

    # Counters: every frame, every face the models see, each decided once.
    assert stats.frames == truth.frames
    assert stats.drops == 0
    assert (stats.faces, stats.skipped) == (scores.faces, scores.skipped)
    assert stats.faces == stats.skipped + stats.wiped + stats.alerts
    assert stats.alerts == len(raised) == len(streamed)

    # Each alert belongs to one appearance: the face it was raised on.
    per_appearance: dict[int, list[lfr.Alert]] = {}
    for frame, alert in raised:
        k = locate(truth, frame, alert.box)
        assert k is not None, (
            f"alert on frame {frame} at {alert.box} is on nobody\n{diagnosis}"
        )
        per_appearance.setdefault(k, []).append(alert)
        assert alert.score >= DEFAULT_THRESHOLD
        assert (alert.camera_id, alert.deployment_id) == ("cam-e2e", dep.deployment_id)
    for k in range(len(truth.appearances)):
        subject = cast.subject(k)
        got = [a.subject_id for a in per_appearance.get(k, [])]
        if subject is None:
            assert got == [], f"false alert on appearance {k}\n{diagnosis}"
        else:
            assert got == [subject], f"appearance {k}: alerts {got}\n{diagnosis}"
    alerted = {a.subject_id for _, a in raised}
    assert alerted == {s for s in cast.subjects if s is not None}

    # The store holds exactly those alerts, and their crops decrypt.
    assert [a.alert_id for a in streamed] == [a.alert_id for _, a in raised]
    stored = store.alerts()
    assert sorted(a.alert_id for a in stored) == sorted(a.alert_id for a in streamed)
    assert len(store) == stats.alerts
    for alert in stored:
        assert alert.reviews == ()
    check_crops(store)

    # The audit log verifies right after the run and tells the same story.
    records = check_audit(tmp_path / "audit.log", signing, dep, store)
    assert [r.fields["subject_id"] for r in records if r.event == "alert_raised"] == [
        a.subject_id for a in store.alerts()
    ]
    kinds = {r.fields["kind"] for r in records if r.event == "anomaly"}
    assert kinds <= {"memory_not_lockable"}  # no stream or processing trouble
    assert (
        next(r for r in records if r.event == "deployment_stopped").fields["reason"]
        == "stopped"
    )
    store.close()


# --- 2. the same video through a real network stream, cut and restored ------------


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def anomalies(path: Path, key: lfr.SigningKey) -> list[str]:
    """The kinds of the anomalies logged so far (the log is being written)."""
    records, _ = read_log(path, key.public_key())  # a torn last line is fine here
    return [str(r.fields["kind"]) for r in records if r.event == "anomaly"]


def test_network_stream_lost_and_recovered(
    tmp_path: Path, cast: Cast, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed (scripts/setup.sh installs it)")
    if not Path("/proc/net/tcp").is_file():
        pytest.skip("needs /proc/net/tcp to see when ffmpeg listens")
    detector, embedder = models
    server = Server(cast.video, free_port(), quality=2)
    store = lfr.AlertStore(tmp_path / "alerts.db", lfr.Key.generate())
    signing = lfr.SigningKey.generate()
    log = tmp_path / "audit.log"
    enrolled = {s for s in cast.subjects if s is not None}
    try:
        server.start()
        wait_for(lambda: listening(server.port), "ffmpeg to listen")
        dep = Deployment(
            source=server.url,
            watchlist=cast.open_watchlist(),
            store=store,
            audit=log,
            signing_key=signing,
            detector=detector,
            embedder=embedder,
        )
        dep.start()
        try:
            wait_for(lambda: dep.stats().frames >= 2 * FPS, "frames from the stream")
            server.kill()  # mid-stream
            wait_for(lambda: "stream_lost" in anomalies(log, signing), "stream_lost")
            assert dep.stats().running  # it waits for the stream to come back
            server.start()  # the source's backoff finds it listening again
            wait_for(
                lambda: "stream_recovered" in anomalies(log, signing),
                "stream_recovered",
            )
            recovered = dep.stats().frames
            wait_for(
                lambda: dep.stats().frames >= recovered + 2 * FPS,
                "frames after the recovery",
            )
            assert dep.stats().running
        finally:
            dep.stop()
            dep.close()
    finally:
        server.kill()
    stats = dep.stats()
    assert stats.frames >= 4 * FPS
    kinds = anomalies(log, signing)
    assert [k for k in kinds if k.startswith("stream_")] == [
        "stream_lost",
        "stream_recovered",
    ]
    records = check_audit(log, signing, dep, store)
    for record in records:
        if record.event == "anomaly" and record.fields["kind"].startswith("stream_"):
            assert record.fields["deployment_id"] == dep.deployment_id
            assert record.fields["camera_id"] == "cam-1"
    stopped = next(r for r in records if r.event == "deployment_stopped")
    assert stopped.fields["reason"] == "stopped"
    # Live frames, re-encoded by ffmpeg: the first enrolled person (frames 8 to 28
    # of the video, which restarts from frame 0 with the server) alerts; nobody
    # off the watchlist does.
    assert stats.alerts >= 1
    assert {a.subject_id for a in store.alerts()} <= enrolled
    check_crops(store)
    store.close()


# --- 3. bad input -----------------------------------------------------------------


def test_a_wrong_frame_stops_the_deployment_and_keeps_what_was_stored(
    tmp_path: Path, cast: Cast, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    detector, embedder = models
    truth = cast.truth
    # Frames up to the end of the first enrolled person's appearance, then a grey
    # frame (h, w) instead of (h, w, 3), then frames never reached.
    first = min(
        (a for k, a in enumerate(truth.appearances) if cast.subject(k) is not None),
        key=lambda a: a.last_frame,
    )
    good = first.last_frame + 1
    reached = threading.Event()

    def frames() -> Iterator[U8]:
        yield from read_frames(cast.video, good)
        yield np.zeros(SIZE[::-1], np.uint8)
        reached.set()
        yield from read_frames(cast.video)

    store_key = lfr.Key.generate()
    store = lfr.AlertStore(tmp_path / "alerts.db", store_key)
    signing = lfr.SigningKey.generate()
    dep = Deployment(
        source=frames(),
        watchlist=cast.open_watchlist(),
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=detector,
        embedder=embedder,
    )
    dep.start()
    streamed = list(dep.alerts(timeout=WAIT_S))
    assert dep.wait(WAIT_S)
    assert not dep.stats().running
    with pytest.raises(DeploymentError, match=f"frame {good} of the iterable.*shape"):
        dep.close()
    dep.close()  # closed once; a second close does nothing
    assert not reached.is_set()  # nothing after the bad frame was asked for
    stats = dep.stats()
    assert stats.frames == good
    assert stats.alerts >= 1  # the first enrolled person, before the bad frame
    assert [a.alert_id for a in store.alerts()] == [a.alert_id for a in streamed]
    check_crops(store)
    records = check_audit(tmp_path / "audit.log", signing, dep, store)
    (anomaly,) = [
        r for r in records if r.event == "anomaly" and r.fields["kind"] == "other"
    ]
    assert anomaly.fields["detail"] == "processing stopped: ValueError"
    stopped = next(r for r in records if r.event == "deployment_stopped")
    assert stopped.fields["reason"] == "error"
    kept = [(a.alert_id, a.subject_id, a.box) for a in store.alerts()]
    store.close()
    # What was stored before the error is intact, also through a new handle.
    with lfr.AlertStore(tmp_path / "alerts.db", store_key) as again:
        assert [(a.alert_id, a.subject_id, a.box) for a in again.alerts()] == kept
        check_crops(again)


def test_a_video_corrupt_from_the_middle_ends_cleanly(
    tmp_path: Path, cast: Cast, models: tuple[lfr.FaceDetector, lfr.FaceEmbedder]
) -> None:
    _, embedder = models
    data = bytearray(cast.video.read_bytes())
    half = len(data) // 2
    noise = np.random.default_rng(11).integers(0, 256, len(data) - half, np.uint8)
    data[half:] = noise.tobytes()
    video = tmp_path / "corrupt.avi"
    video.write_bytes(bytes(data))
    # What decodes, independently of lfr.
    capture = cv2.VideoCapture(str(video))
    decodable = 0
    while capture.grab():
        ok, _ = capture.retrieve()
        decodable += bool(ok)
    capture.release()
    assert 0 < decodable < cast.truth.frames

    counting = CountingDetector()
    raised: list[tuple[int, lfr.Alert]] = []
    store = lfr.AlertStore(tmp_path / "alerts.db", lfr.Key.generate())
    signing = lfr.SigningKey.generate()
    with Deployment(
        source=video,
        watchlist=cast.open_watchlist(),
        store=store,
        audit=tmp_path / "audit.log",
        signing_key=signing,
        detector=counting,
        embedder=embedder,
        on_alert=lambda alert: raised.append((counting.calls - 1, alert)),
    ) as dep:
        assert dep.wait(WAIT_S)
    stats = dep.stats()  # close() did not raise: it ended as a file ends
    assert stats.frames == decodable
    alerted: dict[int, list[str]] = {}
    for frame, alert in raised:
        k = locate(cast.truth, frame, alert.box)
        assert k is not None
        assert cast.subject(k) == alert.subject_id
        alerted.setdefault(k, []).append(alert.subject_id)
    # Enrolled people shown only in frames that decode intact (the last one may be
    # damaged) alert once each; those cut off by the noise at most once.
    for k, appearance in enumerate(cast.truth.appearances):
        subject = cast.subject(k)
        if subject is not None and appearance.last_frame < decodable - 1:
            assert alerted.get(k) == [subject], f"appearance {k}"
        assert len(alerted.get(k, [])) <= 1
    assert any(alerted.values())
    assert [a.alert_id for a in store.alerts()] == [a.alert_id for _, a in raised]
    check_crops(store)
    records = check_audit(tmp_path / "audit.log", signing, dep, store)
    stopped = next(r for r in records if r.event == "deployment_stopped")
    assert stopped.fields["reason"] == "stopped"
    store.close()
