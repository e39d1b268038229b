"""``lfr demo``: the whole pipeline, end to end, on real faces.

It picks people from a folder of photographs (``identities/<name>/*.jpg``, plus
``unknowns/*.jpg`` if there is one: by default the ``lfw-dev`` set under
``../shared/data``), makes the keys, enrols some of them on an encrypted
watchlist, composes a short video of enrolled and unknown people walking past
(:func:`lfr.demo.compose_video`), runs a :class:`lfr.Deployment` on it, prints
every alert as it happens, verifies the signed audit log, writes the
deployment record and says what happened, checked against the video's ground
truth. The video shows faces, so it is deleted at the end unless
``--keep-video`` is given.

Exit status 0 when every enrolled person was alerted, no one else was and the
audit log verifies; 1 otherwise, with the reason. Before anything is read the
process is hardened (no core dumps, not dumpable) or the demo exits 1, unless
``--allow-core-dumps`` (recorded in the audit log, as for ``lfr run``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lfr.cli._common import add_hardening_option, fail, harden
from lfr.errors import LfrError

__all__ = ["add_parsers", "find_data", "run"]

#: The photo sets a data directory may hold, in the order they are looked for.
_DATA_SETS = ("lfw-dev",)
_VIDEO = "demo-video.avi"
_WATCHLIST_KEY = "keys/watchlist.key"  # enrolment staff's
_STORE_KEY = "keys/store.key"  # reviewers': the watchlist's cannot open the store
_SIGNING_KEY = "keys/audit.key"  # never in the audit log's folder
_PUBLIC_KEY = "audit.pub"
_WATCHLIST = "watchlist.lfrw"
_STORE = "alerts.db"
_AUDIT = "audit.log"
#: Least overlap of an alert's box with a person's drawn face to count as theirs.
_MIN_IOU = 0.3
#: Frames either side of the frame an alert came from in which to look for it.
_NEAR = 5


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``demo``."""
    demo = sub.add_parser(
        "demo",
        help="see it work: enrol people, run a video past them, verify the audit",
        description="Runs lfr end to end on real photographs: enrols some people "
        "on an encrypted watchlist, composes a short video of them and of people "
        "who are not on it, runs a deployment on it (alerts printed as they "
        "happen), then verifies the signed audit log and writes the deployment "
        "record. Exits 0 when every enrolled person was alerted, nobody else "
        "was and the audit log verifies.",
    )
    demo.add_argument(
        "--data",
        metavar="DIR",
        help="photos: DIR/identities/<name>/*.jpg (and DIR/unknowns/*.jpg if "
        "there); default: lfw-dev under $LFR_DATA_DIR, else under ../shared/data "
        "beside the current directory or the lfr checkout",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        help="work directory for keys, watchlist, alerts and audit log (new or "
        "empty; default: a new temporary directory)",
    )
    demo.add_argument(
        "--enrolled",
        type=int,
        default=4,
        metavar="N",
        help="people to enrol (default: %(default)s)",
    )
    demo.add_argument(
        "--unknown",
        type=int,
        default=4,
        metavar="N",
        help="people in the video who are not enrolled (default: %(default)s)",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="choice of people and video (default: 0)"
    )
    demo.add_argument("--threshold", type=float, help="match threshold (cosine)")
    demo.add_argument(
        "--keep-video",
        action="store_true",
        help="keep the composed video (it shows faces) in the work directory",
    )
    add_hardening_option(demo)


# -- finding the photos ----------------------------------------------------------------


def _checkout() -> Path | None:
    """The repository checkout lfr runs from, if it runs from one."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "python").is_dir():
            return parent
    prefix = Path(sys.prefix).resolve()  # a .venv inside the checkout
    if (prefix.parent / "pyproject.toml").is_file():
        return prefix.parent
    return None


def _photo_set(folder: Path) -> Path | None:
    """``folder`` itself, or one of its known photo sets, if it has identities."""
    if (folder / "identities").is_dir():
        return folder
    for name in _DATA_SETS:
        if (folder / name / "identities").is_dir():
            return folder / name
    return None


def find_data(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of photos the demo uses.

    Args:
        explicit: ``--data``: a folder with ``identities/`` (or with ``lfw-dev/``
            holding one).

    Returns:
        A folder with ``identities/<name>/*.jpg``.

    Raises:
        FileNotFoundError: None is found; the message lists where it looked.
    """
    if explicit is not None:
        candidates = [Path(explicit)]
    else:
        configured = os.environ.get("LFR_DATA_DIR")
        if configured:
            candidates = [Path(configured)]
        else:
            candidates = [Path.cwd().parent / "shared" / "data"]
            checkout = _checkout()
            if checkout is not None:
                candidates.append(checkout.parent / "shared" / "data")
    looked: list[str] = []
    for candidate in dict.fromkeys(p.resolve() for p in candidates):
        found = _photo_set(candidate)
        if found is not None:
            return found
        looked.append(str(candidate))
    hint = (
        ""
        if explicit is not None
        else " (set LFR_DATA_DIR or give --data DIR: a folder with "
        "identities/<name>/*.jpg)"
    )
    raise FileNotFoundError(
        "no photos found: looked for identities/ and lfw-dev/identities/ in "
        + ", ".join(looked)
        + hint
    )


# -- choosing people -------------------------------------------------------------------


@dataclass
class _Person:
    """Someone shown in the video."""

    name: str
    photos: list[Path]  # drawn in the video
    enrol: list[Path] = field(default_factory=list)  # enrolled from (if enrolled)
    enrolled: bool = False
    note: str = ""
    alerts: list[str] = field(default_factory=list)  # subject ids alerted on them


def _choose(root: Path, enrolled: int, unknown: int, seed: int) -> list[_Person]:
    """The people of the video: the enrolled first, then the unknown."""
    from lfr.demo import pick_people

    strangers = root / "unknowns"
    if strangers.is_dir() and any(strangers.glob("*.jpg")):
        picked = pick_people(root, enrolled, unknown, seed)
        unknowns = [
            _Person(f"unknown-{i + 1}", [p]) for i, p in enumerate(picked.unknown)
        ]
    else:  # no unknowns: other identities play them, one photo each
        picked = pick_people(root, enrolled, 0, seed)
        rng = np.random.default_rng(seed + 1)
        others = [
            folder
            for folder in sorted((root / "identities").iterdir())
            if folder.is_dir()
            and folder.name not in picked.enrol
            and any(folder.glob("*.jpg"))
        ]
        if len(others) < unknown:
            raise ValueError(
                f"{root} has no unknowns/ folder and {len(others)} identities "
                f"besides the enrolled ones; {unknown} unknown people asked for"
            )
        unknowns = []
        for i, index in enumerate(rng.permutation(len(others))[:unknown]):
            photos = sorted(others[int(index)].glob("*.jpg"))
            photo = photos[int(rng.integers(len(photos)))]
            unknowns.append(_Person(f"unknown-{i + 1}", [photo]))
    known = [
        _Person(name, list(picked.probe[name]), list(picked.enrol[name]))
        for name in picked.enrol
    ]
    return known + unknowns


def _enrol(
    watchlist: Any,
    person: _Person,
    detector: Any,
    embedder: Any,
    allow_core_dumps: bool = False,
) -> None:
    """Enrols ``person`` from the photos that show exactly one usable face."""
    from lfr.errors import EnrolmentError

    photos = list(person.enrol)
    skipped: list[str] = []
    while photos:
        try:
            watchlist.enroll(
                person.name,
                photos,
                reason="lfr demo",
                source="lfr demo photos",
                added_by="lfr demo",
                detector=detector,
                embedder=embedder,
                allow_core_dumps=allow_core_dumps,
            )
        except EnrolmentError as exc:
            bad = {index for index, _ in exc.failures}
            skipped += [f"{photos[i].name}: {why}" for i, why in exc.failures]
            photos = [p for i, p in enumerate(photos) if i not in bad]
            if not bad:
                raise
            continue
        person.enrolled = True
        person.enrol = photos
        person.note = (
            f"; skipped {len(skipped)} showing no single usable face" if skipped else ""
        )
        return
    person.note = "no photo with exactly one usable face: left off the watchlist"


# -- ground truth ----------------------------------------------------------------------


def _attribute(truth: Any, box: Sequence[float], near: int | None) -> int | None:
    """The person (index) whose drawn face the alert's box falls on, if any."""
    from lfr.tracking import iou_matrix

    def best(frames: range) -> tuple[float, int | None]:
        top, who = 0.0, None
        for appearance in truth.appearances:
            for frame in frames:
                drawn = appearance.box_at(frame)
                if drawn is None:
                    continue
                iou = float(iou_matrix([box], [drawn])[0, 0])
                if iou > top:
                    top, who = iou, appearance.person
        return top, who

    if near is not None:
        iou, who = best(range(max(0, near - _NEAR), near + _NEAR + 1))
        if iou >= _MIN_IOU:
            return who
    iou, who = best(range(truth.frames))
    return who if iou >= _MIN_IOU else None


# -- output ----------------------------------------------------------------------------


class _Printer:
    """Alerts on stdout; a status line on stderr (in place on a terminal)."""

    def __init__(self, frames: int) -> None:
        self._frames = frames
        self._tty = sys.stderr.isatty()
        self._lock = threading.Lock()
        self._last = 0.0
        self._shown = False

    def line(self, text: str) -> None:
        with self._lock:
            if self._tty and self._shown:
                print("\r\033[K", end="", file=sys.stderr, flush=True)
                self._shown = False
            print(text, flush=True)

    def status(self, stats: Any, final: bool = False) -> None:
        now = time.monotonic()
        if not (final or self._tty or now - self._last >= 5.0):
            return
        self._last = now
        text = (
            f"  frame {stats.frames}/{self._frames}  {stats.fps:5.1f} fps  "
            f"faces {stats.faces}  wiped {stats.wiped + stats.skipped}  "
            f"alerts {stats.alerts}  drops {stats.drops}"
        )
        with self._lock:
            if self._tty:
                end = "\n" if final else ""
                print(f"\r\033[K{text}", end=end, file=sys.stderr, flush=True)
                self._shown = not final
            else:
                print(text, file=sys.stderr, flush=True)


def _check_out(requested: str | None, data: Path) -> Path | None:
    """The requested work directory, checked (not made); ``None``: a temporary one."""
    if requested is None:
        return None
    out = Path(requested).resolve()
    inside_of = [data.resolve()]
    if data.name in _DATA_SETS:  # the data directory around a known photo set
        inside_of.append(data.resolve().parent)
    for inside in inside_of:
        if out == inside or out.is_relative_to(inside):
            raise ValueError(f"--out {out} is inside the photo data {inside}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} must be a new or empty directory")
    return out


def _make_out(out: Path | None) -> tuple[Path, bool]:
    """The work directory, made; and whether it is a new temporary one."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="lfr-demo-")), True
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)  # it will hold a video of faces: the operator's only
    return out, False


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``lfr demo``."""
    if args.enrolled < 1 or args.unknown < 0:
        return fail("demo", "--enrolled must be at least 1, --unknown at least 0")
    try:
        harden("demo", args)  # before any key or face is made or read
    except LfrError as exc:
        return fail("demo", exc)
    try:
        data = find_data(args.data)
        requested = _check_out(args.out, data)
        # Chosen before the work directory is made: too few people leaves nothing.
        people = _choose(data, args.enrolled, args.unknown, args.seed)
        out, temporary = _make_out(requested)
    except (OSError, ValueError) as exc:
        return fail("demo", exc)
    video = out / _VIDEO
    try:
        return _demo(args, data, people, out, temporary, video)
    except (LfrError, OSError, ValueError) as exc:
        return fail("demo", exc)
    finally:
        if video.exists() and not args.keep_video:
            video.unlink()


def _demo(
    args: argparse.Namespace,
    data: Path,
    people: list[_Person],
    out: Path,
    temporary: bool,
    video: Path,
) -> int:
    import lfr
    from lfr.alerts import AlertStore
    from lfr.audit import SigningKey, verify
    from lfr.audit.report import render_markdown, write_report
    from lfr.demo import compose_video
    from lfr.keys import Key
    from lfr.pipeline import DEFAULT_THRESHOLD, Deployment
    from lfr.tracking import TrackerConfig
    from lfr.watchlist import Watchlist

    began = time.monotonic()
    print("lfr demo: live facial recognition end to end, on real photographs")
    print(f"  photos:         {data}")
    print(f"  work directory: {out}{' (new, temporary)' if temporary else ''}")

    detector, embedder = lfr.FaceDetector(), lfr.FaceEmbedder()

    # Keys: the watchlist's, the alert store's (another), one to sign the audit log.
    key = Key.generate()
    store_key = Key.generate()
    (out / _WATCHLIST_KEY).parent.mkdir(mode=0o700, exist_ok=True)
    key.save(out / _WATCHLIST_KEY)
    store_key.save(out / _STORE_KEY)
    signing = SigningKey.generate()
    signing.save(out / _SIGNING_KEY)
    public = signing.public_key()
    public.save(out / _PUBLIC_KEY)
    print(f"\n1. Keys: {_WATCHLIST_KEY} (AES-256: encrypts the watchlist),")
    print(
        f"   {_STORE_KEY} (AES-256: encrypts every alert; the watchlist's key "
        "cannot open them)"
    )
    print(
        f"   and {_SIGNING_KEY} (Ed25519: signs the audit log; public: {_PUBLIC_KEY})"
    )
    print(
        "   (in keys/, not beside the log; on a real site the signing key lives off "
        "the machine or in a token)"
    )

    watchlist = Watchlist.create(out / _WATCHLIST, key, embedder=embedder)
    known = [p for p in people if p.enrol]
    for person in known:
        _enrol(watchlist, person, detector, embedder, args.allow_core_dumps)
    watchlist.save()
    enrolled = [p for p in people if p.enrolled]
    if not enrolled:
        raise ValueError("no one could be enrolled (no photo with one usable face)")
    templates = watchlist.templates
    print(
        f"\n2. Watchlist: {len(enrolled)} people enrolled from {templates} photos "
        f"into {_WATCHLIST}"
    )
    print("   (encrypted; it holds face templates, never the photos)")
    for person in known:
        state = (
            f"{len(person.enrol)} photo(s){person.note}"
            if person.enrolled
            else person.note
        )
        print(f"   - {person.name}: {state}")

    truth = compose_video([p.photos for p in people], video, seed=args.seed)
    width, height = truth.size
    print(
        f"\n3. Video: {truth.frames} frames, {width}x{height} at {truth.fps:g} fps: "
        f"{len(enrolled)} enrolled and {len(people) - len(enrolled)} unknown "
        f"people walk past, up to 3 at a time"
    )
    keep = "kept (--keep-video)" if args.keep_video else "deleted at the end"
    print(f"   ({_VIDEO}: it shows faces, so it is {keep})")

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    tracking = TrackerConfig()
    print(
        f"\n4. Deployment: threshold {threshold:g}; an alert once "
        f"{tracking.confirm_hits} of {tracking.confirm_window} frames of a face "
        "match the same person; every other face is wiped at once"
    )
    printer = _Printer(truth.frames)
    store = AlertStore(out / _STORE, store_key)
    deployment: Deployment | None = None

    def alerted(alert: Any) -> None:
        near = deployment.stats().frames if deployment is not None else None
        who = _attribute(truth, alert.box, near)
        person = None if who is None else people[who]
        if person is None:
            seen = "on no one shown in the video"
        else:
            person.alerts.append(alert.subject_id)
            kind = "enrolled" if person.enrolled else "NOT enrolled"
            seen = f"on {person.name} ({kind})"
        printer.line(
            f"   ALERT {alert.time.strftime('%H:%M:%S.%f')[:-3]} {alert.camera_id} "
            f"subject {alert.subject_id} score {alert.score:.3f}: "
            f"the face is {seen}"
        )
        if person is None:
            unplaced.append(alert.subject_id)

    unplaced: list[str] = []
    try:
        deployment = Deployment(
            source=str(video),
            watchlist=watchlist,
            store=store,
            audit=out / _AUDIT,
            signing_key=signing,
            threshold=threshold,
            camera_id="demo-cam",
            location="lfr demo",
            purpose="demonstration",
            authorised_by="lfr demo",
            detector=detector,
            embedder=embedder,
            tracking=tracking,
            on_alert=alerted,
            allow_core_dumps=args.allow_core_dumps,
        )
        deployment.start()
        while not deployment.wait(0.25):
            printer.status(deployment.stats())
        deployment.close()
        stats = deployment.stats()
        printer.status(stats, final=True)
        stored = len(store)
    finally:
        if deployment is not None:
            deployment.stop()
        store.close()
    if not args.keep_video:
        video.unlink()

    report = verify(out / _AUDIT, public)
    record = write_report(report, out)
    print(f"\n5. Audit: {_AUDIT} verified with {_PUBLIC_KEY}; the deployment record:\n")
    for text in render_markdown(report).splitlines():
        print(f"   {text}" if text else "")

    # What happened, against the video's ground truth.
    hits = [p for p in enrolled if p.name in p.alerts]
    wrong = [p for p in enrolled if any(s != p.name for s in p.alerts)]
    strangers = [p for p in people if not p.enrolled]
    false = [p for p in strangers if p.alerts]
    print("\nWhat just happened")
    print(
        f"  - {stats.frames} frames, {stats.faces} faces detected: "
        f"{stats.alerts} alerts; {stats.wiped + stats.skipped} faces wiped from "
        f"lfr's locked memory at once ({stats.skipped} too poor to judge); copies "
        "the video decoder made are outside lfr's reach (docs/data-handling.md)"
    )
    print(f"  - enrolled people alerted: {len(hits)} of {len(enrolled)}")
    for person in enrolled:
        mark = "alerted" if person in hits else "NOT alerted"
        print(f"      {person.name}: {mark}")
    print(
        f"  - unknown people alerted: {len(false)} of {len(strangers)}; the alert "
        f"store holds {stored} encrypted alerts"
        + (
            ", all of enrolled people: no unknown person was stored"
            if not false
            else ""
        )
    )
    print(
        f"  - the audit log: {report.records} signed records, "
        + ("verified, no violations" if report.ok else "VIOLATIONS found")
        + "; it holds counts and ids, no images or templates"
    )
    print(
        "  - the watchlist was wiped from memory at the end (its encrypted file "
        "stays); the video, which shows faces, "
        + ("was kept (--keep-video)" if args.keep_video else "was deleted")
    )
    print(
        f"  - the {stored} alerts await review by two people (`lfr alerts review`); "
        f"unless held for a case they expire in {_hours(store.policy.alert_ttl)}"
    )
    print(f"  - {time.monotonic() - began:.1f} s in all")

    store_args = f"--store {out / _STORE} --store-key {out / _STORE_KEY}"
    print("\nWhere everything is")
    print(f"  watchlist:          {out / _WATCHLIST}")
    print(f"  alert store:        {out / _STORE}")
    print(f"  audit log:          {out / _AUDIT}")
    print(f"  public key:         {out / _PUBLIC_KEY}")
    print(f"  deployment record:  {record[0]} and .md")
    print(f"  watchlist key:      {out / _WATCHLIST_KEY} (enrolment staff)")
    print(f"  alert store key:    {out / _STORE_KEY} (reviewers)")
    print(f"  audit signing key:  {out / _SIGNING_KEY}")
    if args.keep_video:
        print(f"  video (faces!):     {video}")
    audit_args = f"--audit {out / _AUDIT} --signing-key {out / _SIGNING_KEY}"
    print(
        f"  see the watchlist:  lfr watchlist list {out / _WATCHLIST} "
        f"--watchlist-key {out / _WATCHLIST_KEY}"
    )
    print(f"  see the alerts:     lfr alerts list {store_args}")
    print("    (read only: it destroys nothing; every change below is audited)")
    print(
        f"  review one:         lfr alerts review ID {store_args} {audit_args} "
        "--reviewer OFFICER --decision confirmed"
    )
    print(
        f"  hold for a case:    lfr alerts hold ID {store_args} {audit_args} "
        "--reason CASE --until 7d --by OFFICER"
    )
    print(f"  purge expired:      lfr alerts purge {store_args} {audit_args}")
    print(
        f"  verify the log:     lfr audit verify {out / _AUDIT} "
        f"--public-key {out / _PUBLIC_KEY}"
    )

    reasons = []
    if len(hits) < len(enrolled):
        missed = ", ".join(p.name for p in enrolled if p not in hits)
        reasons.append(f"enrolled people not alerted: {missed}")
    if false:
        reasons.append("unknown people alerted: " + ", ".join(p.name for p in false))
    if wrong:
        reasons.append(
            "alerts naming the wrong person: " + ", ".join(p.name for p in wrong)
        )
    if unplaced:
        reasons.append(f"{len(unplaced)} alert(s) on no one shown in the video")
    if not report.ok:
        reasons.append(f"the audit log has {len(report.violations)} violation(s)")
    if reasons:
        print("\nFAILED (see below)")
        return fail("demo", "; ".join(reasons))
    print(
        "\nOK: every enrolled person was alerted, no one else was, and the audit "
        "log verifies"
    )
    return 0


def _hours(span: Any) -> str:
    hours = span.total_seconds() / 3600
    return f"{hours:g} h"
