"""``lfr eval``: 1:N accuracy and fairness of the pipeline on a labelled dataset.

It reads faces, so it first hardens the process (no core dumps, not dumpable) and
exits 1 when it cannot, unless ``--allow-core-dumps``: it writes no audit log, so
that is warned on stderr.
"""

from __future__ import annotations

import argparse

from lfr.cli._common import add_hardening_option, fail, harden
from lfr.errors import LfrError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``eval``."""
    p = sub.add_parser(
        "eval",
        help="measure FNIR/FPIR, TPIR and thresholds on a labelled dataset",
        description="Runs the live pipeline over DATASET (identities/<name>/*.jpg, "
        "optionally unknowns/*.jpg) and reports 1:N open-set accuracy: rank-1, "
        "TPIR at FPIR 1%, 0.1%, 0.01%, DET curve, the threshold for a watchlist "
        "size, and per-group FNIR/FPIR. Embeddings are cached, encrypted, per "
        "model id; deleting the cache's cache.key destroys the cache. See "
        "docs/accuracy.md.",
    )
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument(
        "--enrol",
        type=int,
        default=1,
        metavar="K",
        help="photos per identity on the watchlist (default 1)",
    )
    p.add_argument(
        "--watchlist-size",
        type=int,
        metavar="N",
        help="watchlist size to set thresholds for (default: the data's)",
    )
    p.add_argument(
        "--groups", metavar="CSV", help="identity,group CSV for per-group FNIR/FPIR"
    )
    p.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="operating threshold (default: FPIR 1%% for the size)",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write report.json, det.png, scores.png, report.md here",
    )
    p.add_argument("--cache", metavar="DIR", help="embedding cache directory")
    p.add_argument("--no-cache", action="store_true", help="do not cache")
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate")
    add_hardening_option(p)


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Runs ``eval``."""
    from lfr.evaluation import evaluate

    try:
        harden("eval", args)  # before any face is read
        report = evaluate(
            args.dataset,
            enrol=args.enrol,
            watchlist_size=args.watchlist_size,
            groups_csv=args.groups,
            threshold=args.threshold,
            out=args.out,
            gate=False if args.no_gate else None,
            cache=False if args.no_cache else (args.cache or True),
        )
    except (LfrError, OSError, ValueError) as exc:
        return fail("eval", exc)
    tpir = ", ".join(f"{t:.4f} @ FPIR {f:g}" for f, t in report.tpir.items())
    print(
        f"mated {report.mated}, non-mated {report.nonmated}, "
        f"rank-1 {report.rank1:.4f}; TPIR {tpir}"
    )
    for f, t in report.threshold_at_fpir.items():
        print(
            f"threshold for FPIR {f:g} with {report.watchlist_size} identities: {t:.4f}"
        )
    for flag in report.group_flags:
        print(f"FLAG: {flag}")
    if args.out:
        print(f"wrote {args.out}/report.json, det.png, scores.png, report.md")
    return 0
