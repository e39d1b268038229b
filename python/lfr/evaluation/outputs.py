"""Outputs of ``lfr eval``: report.json, det.png, scores.png and report.md.

The plots need matplotlib, which is the optional extra ``lfr[eval]``: it is
imported here, when plots are about to be drawn, never with ``lfr``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np

from lfr.errors import MissingExtraError
from lfr.evaluation.run import EvalReport

__all__ = ["markdown", "pyplot", "write_outputs"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the non-interactive Agg backend.

    Returns:
        The module.

    Raises:
        MissingExtraError: matplotlib is not installed (``pip install 'lfr[eval]'``).
    """
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            "the plots (det.png, scores.png) need matplotlib, which is not "
            "installed: pip install 'lfr[eval]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_outputs(report: EvalReport, out: Path) -> None:
    """Writes ``report.json``, ``det.png``, ``scores.png`` and ``report.md``.

    Raises:
        MissingExtraError: matplotlib is not installed; nothing was written.
    """
    pyplot()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.to_json() + "\n")
    _det_plot(report, out / "det.png")
    _score_plot(report, out / "scores.png")
    (out / "report.md").write_text(markdown(report))


def _det_plot(report: EvalReport, path: Path) -> None:
    fnir = report.arrays["det_fnir"]
    fpir = report.arrays["det_fpir"]
    keep = (fnir > 0) & (fpir > 0)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(fpir[keep], fnir[keep], drawstyle="steps-post", label=report.model_id)
    for f, t in report.threshold_observed.items():
        ax.axvline(f, color="grey", lw=0.6, ls=":")
        ax.annotate(f"T={t:.3f}", (f, 1 - report.tpir[f]), fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("FPIR (non-mated searches that alert)")
    ax.set_ylabel("FNIR (mated searches missed)")
    ax.set_title(f"DET, {report.identities} identities, enrol {report.enrol}")
    ax.grid(True, which="both", lw=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _score_plot(report: EvalReport, path: Path) -> None:
    genuine = report.arrays["genuine"]
    nonmated = report.arrays["nonmated"]
    both = np.concatenate([genuine, nonmated])
    bins = (
        np.linspace(float(both.min()), float(both.max()), 60).tolist()
        if both.size
        else 10
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(genuine, bins=bins, alpha=0.6, density=True, label="mated (own identity)")
    ax.hist(nonmated, bins=bins, alpha=0.6, density=True, label="non-mated (best)")
    ax.axvline(report.threshold, color="k", ls="--", label=f"T={report.threshold:.4f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def markdown(report: EvalReport) -> str:
    """The Markdown report."""
    r = report
    lines = [
        "# lfr eval report",
        "",
        f"- Dataset: `{r.dataset}`; pipeline `{r.pipeline}`",
        f"- Watchlist: {r.identities} identities, {r.enrol} photo(s) each; "
        f"thresholds for a watchlist of {r.watchlist_size} ({r.size_method})",
        f"- Searches: {r.mated} mated, {r.nonmated} non-mated ({r.nonmated_source});"
        f" no usable face: {r.no_face}",
        f"- Embeddings {'from the encrypted cache' if r.cached else 'computed'}",
        "",
        "| FPIR | TPIR | FNIR | threshold (observed) | "
        f"threshold for {r.watchlist_size} |",
        "|---:|---:|---:|---:|---:|",
    ]
    for f, tpir in r.tpir.items():
        note = "" if r.threshold_supported.get(f, True) else " (upper bound)"
        lines.append(
            f"| {_pct(f)} | {tpir:.4f} | {1 - tpir:.4f} | "
            f"{r.threshold_observed[f]:.4f} | {r.threshold_at_fpir[f]:.4f}{note} |"
        )
    lines += [
        "",
        f"Rank-1: {r.rank1:.4f}. At the operating threshold {r.threshold:.4f}: "
        f"FNIR {r.fnir_at_threshold:.4f}, FPIR {r.fpir_at_threshold:.4f} with "
        f"{r.identities} identities, {r.fpir_at_threshold_for_size:.4f} for "
        f"{r.watchlist_size}.",
        "",
        "![DET](det.png) ![scores](scores.png)",
        "",
    ]
    if r.groups:
        lines += [
            "## Groups (at the operating threshold, 95% Wilson intervals)",
            "",
            "| group | identities | searches | FNIR | FNIR CI | FPIR | FPIR CI |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for g in r.groups:
            if not g["mated"]:
                continue
            lines.append(
                f"| {g['group']} | {g['identities']} | {g['mated']} | "
                f"{g['fnir']:.4f} | {g['fnir_ci'][0]:.4f}-{g['fnir_ci'][1]:.4f} | "
                f"{g['fpir']:.4f} | {g['fpir_ci'][0]:.4f}-{g['fpir_ci'][1]:.4f} |"
            )
        lines += ["", *(f"- **Flag:** {f}" for f in r.group_flags)]
        lines.append("" if r.group_flags else "- No significant difference.")
    lines += ["## Protocol", "", r.protocol, ""]
    return "\n".join(lines)
