"""``lfr run``: a live deployment from the command line.

A one-line status (frames per second, faces, wiped, alerts, drops, and a lost stream
at once) on stderr, each alert on stdout as it happens; Ctrl-C (or SIGTERM) stops:
the audit log records the end and is closed, within 10 seconds whatever the
deployment was doing (a write still blocked then is abandoned: its alerts are named
on stderr and audited as ``alert_lost`` at the next start). The exit status is 0
after a clean stop and 1 after an error (a full disk, an unwritable log), which is
printed with every alert decided but not stored and audited.

It takes two keys: the watchlist's (``--watchlist-key K`` or
``--watchlist-passphrase``), held by those who enrol people, and the alert
store's own (``--store-key K``), held by those who review alerts. One key for both
is refused unless ``--allow-shared-key`` (then recorded in ``deployment_started``
and shown in the deployment record); a single ``--key-file`` is refused with a
message naming the two options.
Before any key or face is read the process is hardened (no core dumps, not
dumpable); when that fails it exits 1 unless ``--allow-core-dumps``, which the
audit log records (``deployment_started.hardened`` false, anomaly
``core_dumps_allowed``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from lfr.cli._common import (
    add_deployment_key_options,
    add_hardening_option,
    deployment_keys,
    fail,
    harden,
    signer_from,
)
from lfr.errors import LfrError
from lfr.tracking import TrackerConfig

#: How often the main thread looks for a stop signal or the end, in seconds.
_POLL_S = 0.2


#: The k-of-n rule ``lfr run`` uses (the tracker's defaults), named in its help.
_RULE = TrackerConfig()


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``run``."""
    run = sub.add_parser(
        "run",
        help="run a watchlist against a camera, video, stream or folder",
        description="Runs a live deployment: every face that does not match is "
        "wiped at once; alerts are encrypted into the store; everything is audited.",
    )
    run.add_argument(
        "--source",
        required=True,
        help="camera index (0), video file, stream URL (rtsp://, http://, udp://) "
        "or folder of images, taken in name order as the frames of one scene. A "
        f"face alerts once it matched in {_RULE.confirm_hits} of "
        f"{_RULE.confirm_window} consecutive frames at about the same place (one "
        "track): a folder of single, unrelated photos never alerts",
    )
    run.add_argument("--watchlist", required=True, metavar="WL", help=".lfrw file")
    add_deployment_key_options(run)
    run.add_argument(
        "--store", default="alerts.db", help="alert store (default: %(default)s)"
    )
    run.add_argument(
        "--audit", default="audit.log", help="audit log (default: %(default)s)"
    )
    run.add_argument(
        "--signing-key",
        metavar="S",
        required=True,
        help="audit signing key: a key file (`lfr keys create --signing S`) or a "
        "key in a PKCS#11 token, 'pkcs11:token=T;object=O' (quoted); keep it off this "
        "machine's data directory: a key in the log's folder is refused, since "
        "whoever can rewrite the log could then re-sign it",
    )
    run.add_argument(
        "--allow-key-beside-log",
        action="store_true",
        help="run although the signing key is in the audit log's folder (recorded "
        "in the log as an anomaly, key_beside_log)",
    )
    run.add_argument(
        "--new-log",
        action="store_true",
        help="start a new audit log although the alert store already has one (the "
        "new log continues it; an auditor needs both, oldest first)",
    )
    run.add_argument(
        "--checkpoints",
        metavar="PATH",
        help="append signed checkpoints of the audit log (at the start, with every "
        "counters record, at the end) to this file, or to <log_id>.checkpoints.jsonl "
        "in this directory; keep it off this machine's data (docs/audit.md)",
    )
    run.add_argument("--threshold", type=float, help="match threshold (cosine)")
    run.add_argument(
        "--record-preview",
        action="store_true",
        help="record the operator preview (the whole picture blurred, matched "
        "faces visible) encrypted with the store key, beside the store; it expires "
        "and is purged with the alerts. Read it back with `lfr alerts "
        "preview-export` (audited). Without this flag nothing is recorded",
    )
    run.add_argument(
        "--preview",
        metavar="OUT",
        help=argparse.SUPPRESS,  # removed: an unencrypted file; refused with a reason
    )
    run.add_argument("--camera-id", default="cam-1")
    run.add_argument("--location", default="unspecified")
    run.add_argument("--purpose", default="unspecified")
    run.add_argument("--authorised-by", default="unspecified")
    run.add_argument(
        "--every",
        type=_positive,
        default=1,
        help="process every n-th frame of a file or folder",
    )
    add_hardening_option(run)
    run.add_argument(
        "--frame-size",
        metavar="WxH",
        type=_frame_size,
        help="largest frame a camera or stream delivers, for the locked-memory "
        "budget (default 1920x1080; files and folders are measured)",
    )
    run.add_argument(
        "--print-memlock",
        action="store_true",
        help="print the locked memory this run needs (RLIMIT_MEMLOCK: systemd "
        "LimitMEMLOCK=, ulimit -l, docker --ulimit memlock=) and exit",
    )


def _positive(text: str) -> int:
    """A whole number of at least 1 (refused by argparse, before anything runs)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _frame_size(text: str) -> tuple[int, int]:
    """``WxH`` as ``(width, height)``."""
    w, sep, h = text.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) < 1 or int(h) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(w), int(h)


def _memlock(args: argparse.Namespace) -> Any:
    """The run's locked-memory budget, from the watchlist's header and the source.

    Nothing is decrypted or allocated: the header gives the templates and the
    payload's size, the source's headers the frame size.
    """
    from lfr._lfrw import read_header
    from lfr.pipeline.memlock import for_deployment

    header, _, _, sealed = read_header(Path(args.watchlist))
    return for_deployment(
        source=args.source,
        watchlist_rows=header.templates,
        watchlist_dim=header.dim,
        watchlist_plain_bytes=len(sealed),
        preview=bool(args.record_preview),
        frame_size=args.frame_size,
    )


def _signing_key(args: argparse.Namespace) -> Any:
    """The signer, a key file refused in the log's folder unless allowed."""
    from lfr.audit.token import parse_spec

    if parse_spec(args.signing_key) is not None:
        return signer_from(args.signing_key)  # in a token: never beside the log
    path = Path(args.signing_key)
    if not path.exists():
        raise FileNotFoundError(
            f"no signing key at {path}; make one with `lfr keys create --signing "
            f"{path}`, outside the folder of the audit log"
        )
    if _beside(path, Path(args.audit)) and not args.allow_key_beside_log:
        raise ValueError(
            f"the signing key {path} is in the audit log's folder: whoever can "
            "rewrite the log could re-sign it. Keep the key elsewhere (another "
            "volume, a token), or pass --allow-key-beside-log (recorded in the log)"
        )
    return signer_from(str(path))


def _beside(key: Path, log: Path) -> bool:
    """Whether the key file is in the log's folder."""
    return key.resolve().parent == log.resolve().parent


class _Status:
    """The one-line status: rewritten in place on a terminal, every 5 s otherwise.

    A lost live stream shows at once, not at the next tick: ``STREAM LOST at
    <time> UTC, reconnecting`` until frames come again, then once ``stream back
    after <n> s``.
    """

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._every = 0.5 if self._tty else 5.0
        self._last = 0.0
        self._lost_at: datetime | None = None
        self._width = 0

    def tick(self, stats: Any) -> None:
        """Shows the status if it is due, or the stream was lost or came back."""
        now = time.monotonic()
        if now - self._last >= self._every or stats.stream_lost_at != self._lost_at:
            self._last = now
            self.show(stats)

    def show(self, stats: Any, final: bool = False) -> None:
        text = (
            f"{stats.fps:5.1f} fps  frames {stats.frames}  faces {stats.faces}  "
            f"wiped {stats.wiped + stats.skipped}  alerts {stats.alerts}  "
            f"drops {stats.drops}"
        )
        lost_at: datetime | None = stats.stream_lost_at
        if lost_at is not None:
            text += f"  STREAM LOST at {lost_at:%H:%M:%S} UTC, " + (
                "not reconnected" if final else "reconnecting"
            )
        elif self._lost_at is not None:
            down = (datetime.now(timezone.utc) - self._lost_at).total_seconds()
            text += f"  stream back after {down:.0f} s"
        self._lost_at = lost_at
        if self._tty:  # padded: a shorter line must not leave the longer one's end
            self._width = max(self._width, len(text))
            print(
                f"\r{text:<{self._width}}",
                end="\n" if final else "",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``lfr run``."""
    stopping = threading.Event()
    running: list[Any] = []  # the deployment, once made

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for deployment in running:
            deployment.stop()

    # From the first moment: a signal while the models load stops at once too.
    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args, stopping, running)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(
    args: argparse.Namespace, stopping: threading.Event, running: list[Any]
) -> int:
    from lfr.alerts import AlertStore
    from lfr.embed import FaceEmbedder
    from lfr.pipeline import Deployment
    from lfr.pipeline.deployment import check_separate_keys
    from lfr.watchlist import Watchlist

    try:
        if args.preview is not None:
            raise ValueError(
                "--preview OUT is gone: it wrote faces to an unencrypted video. Use "
                "--record-preview (encrypted with the store key, purged with the "
                "alerts, read back with `lfr alerts preview-export`)"
            )
        # Before any key or face is read; opening the video for its size (below)
        # lets FFmpeg probe, which may decode a frame.
        harden("run", args)
        budget = _memlock(args)  # before anything is locked
        if args.print_memlock:
            print(budget.describe())
            return 0
        budget.check()
        signing = _signing_key(args)  # refused before anything loads
        watchlist_key, store_key = deployment_keys(args)  # refused before loading
        embedder = FaceEmbedder()
        watchlist = Watchlist.open(
            args.watchlist, watchlist_key, model_id=embedder.model_id
        )
        # A passphrase's key is known once derived: compared before the store opens.
        check_separate_keys(
            watchlist.key_id, store_key.key_id, allow_shared=args.allow_shared_key
        )
        store = AlertStore(args.store, store_key)
        _check_new_log(args, store)
        preview = None
        if args.record_preview:
            from lfr.preview import Preview, PreviewRecorder

            recorder = PreviewRecorder(store)
            preview = Preview(recorder=recorder)
            print(
                f"recording the preview, encrypted: {recorder.recording_id}",
                file=sys.stderr,
            )

        def printed(alert: Any) -> None:
            print(
                f"ALERT {alert.time.isoformat()} camera {alert.camera_id} "
                f"subject {alert.subject_id} score {alert.score:.3f} "
                f"id {alert.alert_id}",
                flush=True,
            )

        deployment = Deployment(
            source=args.source,
            watchlist=watchlist,
            store=store,
            audit=args.audit,
            signing_key=signing,
            threshold=args.threshold,
            camera_id=args.camera_id,
            location=args.location,
            purpose=args.purpose,
            authorised_by=args.authorised_by,
            embedder=embedder,
            on_alert=printed,
            preview=preview,
            every=args.every,
            checkpoints=args.checkpoints,
            frame_size=args.frame_size,
            allow_shared_key=args.allow_shared_key,
            allow_core_dumps=args.allow_core_dumps,
        )
    except (LfrError, OSError, ValueError) as exc:
        return fail("run", exc)
    if stopping.is_set():
        store.close()
        print("stopped before the deployment started", file=sys.stderr)
        return 0
    running.append(deployment)
    status = _Status()
    try:
        try:
            deployment.start()  # checks for a stop between its steps
        except LfrError:
            if stopping.is_set():  # the signal ended the start: no error
                print(
                    "stopped while starting; audit log " + args.audit, file=sys.stderr
                )
                return 0
            raise
        if (
            args.allow_key_beside_log
            and not args.signing_key.startswith("pkcs11:")
            and _beside(Path(args.signing_key), Path(args.audit))
        ):
            log = deployment.audit_log
            if log is not None:
                log.append(
                    "anomaly",
                    kind="key_beside_log",
                    detail="the operator ran with the signing key in the audit "
                    "log's folder (--allow-key-beside-log)",
                    deployment_id=deployment.deployment_id,
                )
        # Short waits, so a signal is acted on at once (close is bounded).
        while not stopping.is_set() and not deployment.wait(_POLL_S):
            status.tick(deployment.stats())
        status.show(deployment.stats(), final=True)
        deployment.close()
    except LfrError as exc:
        return fail("run", exc)
    finally:
        if not deployment.abandoned:  # else a blocked write may still hold it
            store.close()
    print(
        f"stopped{' (interrupted)' if stopping.is_set() else ''}; audit log "
        f"{args.audit}",
        file=sys.stderr,
    )
    return 0


def _check_new_log(args: argparse.Namespace, store: Any) -> None:
    """Refuses to start a new log for a store that has one, unless --new-log."""
    chain = store.chain
    if chain is None or Path(args.audit).exists() or args.new_log:
        return
    store.close()
    raise ValueError(
        f"the audit log {args.audit} does not exist, but alert store {args.store} "
        f"already has one (log {chain.log_id}, {chain.records} records): give that "
        "log's path with --audit, or pass --new-log to start a new log that "
        "continues it (an auditor then needs both)"
    )
