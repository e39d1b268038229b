"""1:N open-set accuracy of lfr's face pipeline on lfw-dev, written to docs/accuracy.md.

Usage: python benches/accuracy.py [docs/accuracy.md]. The protocol is PROTOCOL below;
``lfr eval`` (a later issue) generalises it to any dataset.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

import lfr
from lfr.embed import DlibModel
from lfr.metrics import OpenSetResult, open_set_metrics

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

PROTOCOL = """\
- Data: `$LFR_DATA_DIR/lfw-dev` (default ../shared/data/lfw-dev): 208 identities
  with 5 to 10 photos each, and 1,000 unknowns seen once.
- In every photo the labelled face is the detected face whose box centre is nearest
  the image centre. A photo without a detected face (or whose face the quality gate
  rejects, where a variant uses the gate) is a miss if mated and no alert if
  non-mated.
- Watchlist: the first photo (by file name) of each identity (the first two in the
  last variant). Mated searches: every other photo of the identities. Non-mated
  searches: the unknowns.
- Score: cosine similarity of L2-normalised embeddings (`lfr.Matcher`, exact).
- Rank-1: the best candidate is the right identity. TPIR at FPIR x: the threshold is
  set on the non-mated best scores so that at most x of them alert; TPIR is the share
  of mated searches whose best candidate is right and reaches it."""


def data_root() -> Path:
    """``LFR_DATA_DIR`` or ../shared/data beside the checkout."""
    configured = os.environ.get("LFR_DATA_DIR")
    repo = Path(__file__).resolve().parents[1]
    return Path(configured) if configured else repo.parent / "shared" / "data"


@dataclass(frozen=True)
class Photo:
    """One image of the protocol: its file and identity index (-1: unknown)."""

    path: Path
    identity: int
    enrol: bool


def protocol(root: Path, enrol: int = 1) -> list[Photo]:
    """Every photo of lfw-dev with its role."""
    photos = []
    people = sorted(p for p in (root / "identities").iterdir() if p.is_dir())
    for k, person in enumerate(people):
        for i, file in enumerate(sorted(person.glob("*.jpg"))):
            photos.append(Photo(file, k, i < enrol))
    photos += [Photo(f, -1, False) for f in sorted((root / "unknowns").glob("*.jpg"))]
    return photos


def labelled_face(detector: lfr.FaceDetector, frame: U8) -> lfr.Detections | None:
    """The detected face nearest the image centre, or None."""
    faces = detector.detect(frame)
    if len(faces) == 0:
        return None
    h, w = frame.shape[:2]
    centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
    i = int(np.argmin(((centres - [w / 2, h / 2]) ** 2).sum(axis=1)))
    return lfr.Detections(
        faces.boxes[i : i + 1].copy(),
        faces.scores[i : i + 1].copy(),
        faces.landmarks[i : i + 1].copy(),
    )


Embed = Callable[[U8, lfr.Detections], "F32 | None"]


def run(photos: list[Photo], detector: lfr.FaceDetector, embed: Embed) -> OpenSetResult:
    """The protocol's metrics for one way of embedding a labelled face."""
    gallery_ids: list[int] = []
    gallery: list[F32] = []
    mated_true: list[int] = []
    mated: list[F32 | None] = []
    nonmated: list[F32 | None] = []
    for photo in photos:
        frame = np.asarray(cv2.imread(str(photo.path)), dtype=np.uint8)
        face = labelled_face(detector, frame)
        vec = None if face is None else embed(frame, face)
        if photo.identity < 0:
            nonmated.append(vec)
        elif photo.enrol:
            if vec is not None:
                gallery_ids.append(photo.identity)
                gallery.append(vec)
        else:
            mated_true.append(photo.identity)
            mated.append(vec)
    matcher = lfr.Matcher(gallery[0].shape[0])
    ids = np.asarray(gallery_ids)
    vectors = np.vstack(gallery).astype(np.float32)
    # Several enrolment photos per identity: one entry each, ids made unique.
    order = np.arange(len(ids))
    matcher.add(order, vectors)

    def best(vectors_or_none: list[F32 | None]) -> tuple[npt.NDArray[np.int64], F32]:
        top_ids = np.full(len(vectors_or_none), -1, np.int64)
        top_scores = np.full(len(vectors_or_none), -np.inf, np.float32)
        found = [i for i, v in enumerate(vectors_or_none) if v is not None]
        present = [v for v in vectors_or_none if v is not None]
        if found:
            queries = np.vstack(present).astype(np.float32)
            rows, scores = matcher.search(queries, k=1)
            top_ids[found] = ids[rows[:, 0]]
            top_scores[found] = scores[:, 0]
        return top_ids, top_scores

    mated_ids, mated_scores = best(mated)
    _, nonmated_scores = best(nonmated)
    return open_set_metrics(
        mated_ids, mated_scores, np.asarray(mated_true), nonmated_scores
    )


def embedder_fn(
    embedder: lfr.FaceEmbedder, gate: lfr.QualityGate | None = None
) -> Embed:
    """Embeds the labelled face, or None where the gate rejects it."""

    def embed(frame: U8, face: lfr.Detections) -> F32 | None:
        if gate is not None and not gate.assess(frame, face).passed[0]:
            return None
        return np.array(embedder.embed(frame, face)[0])

    return embed


def main(argv: list[str]) -> int:
    """Runs every variant and writes the report."""
    out = Path(argv[1]) if len(argv) > 1 else Path("docs/accuracy.md")
    root = data_root() / "lfw-dev"
    if not (root / "identities").is_dir():
        print(f"no lfw-dev under {root} (set LFR_DATA_DIR)", file=sys.stderr)
        return 2
    detector = lfr.FaceDetector()
    fp32: DlibModel = "dlib-resnet"
    template = lfr.FaceEmbedder(model=fp32, alignment="template", flip=False)
    template_flip = lfr.FaceEmbedder(model=fp32, alignment="template", flip=True)
    dlib = lfr.FaceEmbedder(model=fp32, flip=False)
    dlib_flip = lfr.FaceEmbedder(model=fp32)
    int8 = lfr.FaceEmbedder(model="dlib-resnet-int8", flip=False)
    int8_flip = lfr.FaceEmbedder(model="dlib-resnet-int8")
    gate = lfr.QualityGate()
    variants: list[tuple[str, int, Embed]] = [
        ("float32, YuNet landmarks onto a template", 1, embedder_fn(template)),
        ("float32, template + mirror", 1, embedder_fn(template_flip)),
        ("float32, dlib's shape predictor and chip", 1, embedder_fn(dlib)),
        ("float32, dlib alignment + mirror", 1, embedder_fn(dlib_flip)),
        ("int8, dlib alignment", 1, embedder_fn(int8)),
        ("int8, dlib alignment + mirror (the default)", 1, embedder_fn(int8_flip)),
        ("the default + quality gate", 1, embedder_fn(int8_flip, gate)),
        ("the default, two enrolment photos", 2, embedder_fn(int8_flip)),
    ]
    rows = []
    for name, enrol, embed in variants:
        started = time.monotonic()
        result = run(protocol(root, enrol), detector, embed)
        print(f"{name}: {result} ({time.monotonic() - started:.0f} s)", file=sys.stderr)
        rows.append((name, enrol, result))
    out.write_text(report(rows))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def report(rows: list[tuple[str, int, OpenSetResult]]) -> str:
    """docs/accuracy.md."""
    lines = [
        "# Accuracy",
        "",
        "1:N open-set identification on lfw-dev with lfr's own pipeline (YuNet",
        "detector, alignment, dlib ResNet embedder converted by lfr, exact cosine",
        "matcher). Generated by `python benches/accuracy.py`, which runs the default",
        "pipeline and the variants that show what each choice bought.",
        "",
        "## Protocol",
        "",
        PROTOCOL,
        "",
        "## Results",
        "",
        f"- Date: {datetime.now(timezone.utc).date()} (UTC); machine: "
        f"{platform.processor() or platform.machine()}, lfr {lfr.__version__}",
        "- Targets (issue 4): rank-1 >= 0.97 and TPIR at FPIR 1% >= 0.75. A",
        "  straightforward pipeline measured rank-1 0.953, TPIR 0.58 (FPIR 1%) and",
        "  0.34 (FPIR 0.1%) when the issue was filed.",
        "",
        "| variant | enrolled photos | mated | rank-1 | TPIR @ FPIR 1% | "
        "TPIR @ FPIR 0.1% | threshold @ 1% |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, enrol, r in rows:
        lines.append(
            f"| {name} | {enrol} | {r.mated} | {r.rank1:.3f} | {r.tpir[0.01]:.3f} | "
            f"{r.tpir[0.001]:.3f} | {r.thresholds[0.01]:.4f} |"
        )
    return "\n".join(lines) + "\n" + NOTES


NOTES = """
## What each change bought

- **dlib's own alignment** (`alignment="dlib"`): lfr's implementation of dlib's
  5-point shape predictor and dlib's chip geometry, which is what the descriptor
  was trained on. It is the largest single gain: about +2 points of rank-1, +13 of
  TPIR at FPIR 1% and +26 at FPIR 0.1% over the template alignment from YuNet's
  landmarks.
- **Mirror-image averaging** (`flip=True`): the face and its aligned mirror image
  are embedded and averaged. It adds about +1 point of rank-1 and +3 to +6 of TPIR
  at FPIR 1%, at twice the inference time.
- **int8 convolutions** (`model="dlib-resnet-int8"`): lfr's converter writes
  per-channel int8 weights and uint8 activations whose scales were calibrated on
  att_faces, not on this evaluation set. Inference is about 2.4x faster on CPUs with
  VNNI (docs/benchmarks.md). Its embeddings agree with float32 at cosine 0.9997 on
  average (minimum 0.997). The higher TPIR at FPIR 1% is not a real gain: the
  threshold is set by the 10th highest of 1,000 non-mated scores and moves with
  them. It is the default where the CPU has VNNI; together with the two changes above
  it meets the issue's targets within the speed budget.
- **The quality gate** changes nothing on the non-mated side here, and it rejects a
  handful of mated probes (extreme half-profiles) that would have matched: on
  lfw-dev's clean news photos it only costs. It exists for live video, where tiny,
  blurred and turned faces are common. A skipped face raises no alert and is never
  stored.
- **A second enrolment photo** per identity (a protocol change, shown for planning)
  adds about +1.5 points of rank-1 and +7 to +11 of TPIR at FPIR 1%. Forces that can
  enrol two good images per person should.
- **Tried and dropped:** centring embeddings on the watchlist's mean vector cut TPIR
  at FPIR 1% from 0.72 to 0.43. Scaling the template by +-6%, or moving it 3 pixels
  up or down, changed the results by about a point either way: within the noise.

## Reading these numbers

- With 1,000 non-mated searches, FPIR 1% means 10 false alerts and FPIR 0.1% means
  1, so the 0.1% column is noisy. With 1,377 mated searches, a TPIR near 0.8 has a
  95% interval of about +-2.1 points.
- lfw-dev is made of news photographs: frontal, well lit, high resolution. Live
  video gives lower numbers. FPIR also grows with the size of the watchlist, so a
  threshold tuned here does not carry over.
- Thresholds belong to one model, one alignment and one `flip` setting
  (`FaceEmbedder.model_id`). A force must calibrate its threshold with its own
  pipeline on its own data before deploying; `lfr eval` (a later release) will run
  this protocol on any dataset laid out the same way.
"""


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
