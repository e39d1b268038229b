"""Compares two installed lfr wheels on the matcher and call-overhead benchmarks.

Each wheel is installed in its own virtualenv (with the ``bench`` extra and
hypothesis); the runs are interleaved, old and new in turn (ABBA order, so a drift of
the machine during the run weighs on both), from a copy of ``benches/`` outside the
source tree so that ``import lfr`` is the installed wheel.

Usage::

    python benches/compare_wheels.py run --old VENV --new VENV --out DIR [--rounds 3]
        [--select 'N1000- or N10000-']                 # a subset of the cases
    python benches/compare_wheels.py report DIR        # markdown tables on stdout
    python benches/compare_wheels.py probe OUT.json    # inside a venv: the probes

``run`` writes, per wheel and round, pytest-benchmark's JSON (``{wheel}-{round}.json``)
and the call-overhead probes (``{wheel}-{round}-probe.json``), then the report.
A case's time per wheel is the median of its per-round medians; its spread is the
largest (max - min) / median of the per-round medians of either wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import timeit
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# Call overhead (N = 1,000) and the matcher up to N = 100,000 with every
# implementation (numpy and FAISS are the same in both wheels: a control for the
# machine), and N = 1,000,000 for lfr f32.
SELECT = (
    "test_wipe or test_pool or N1000- or N10000- or N100000- or (lfr-f32 and N1000000-)"
)
FILES = ["benches/test_matcher.py", "benches/test_secure.py"]
LIMIT = 5.0  # percent


def probes() -> dict[str, float]:
    """Median seconds per call of the Python/Rust boundary's cheapest calls."""
    import numpy as np

    import lfr

    m = lfr.Matcher(128, "f32", threads=1)
    m.add(np.arange(1, dtype=np.int64), np.eye(1, 128, dtype=np.float32))
    q = np.eye(1, 128, dtype=np.float32)
    ids = np.empty((1, 1), dtype=np.int64)
    scores = np.empty((1, 1), dtype=np.float32)
    buf = lfr.SecureBuffer(2048)
    cases: dict[str, Callable[[], object]] = {
        "Matcher.search, N = 1, b = 1": lambda: m.search(q, 1),
        "_core search (3 arrays in), N = 1": lambda: m._core.search(q, 1, ids, scores),
        "len(Matcher)": lambda: len(m),
        "SecureBuffer.wipe, 2 KiB": buf.wipe,
        "SecureBuffer.array(), 2 KiB": buf.array,
        "np.asarray(SecureBuffer), 2 KiB": lambda: np.asarray(buf),
    }
    out = {}
    for name, fn in cases.items():
        timer = timeit.Timer(fn)
        number, _ = timer.autorange()
        out[name] = statistics.median(t / number for t in timer.repeat(15, number))
    buf.close()
    return out


def _load(path: Path) -> dict[str, float]:
    """Median seconds by benchmark name from one run's files."""
    data = json.loads(path.read_text())
    return {b["name"]: b["stats"]["median"] for b in data["benchmarks"]}


def run(args: argparse.Namespace) -> None:
    """Runs the wheels in turn and writes the results under ``args.out``."""
    out: Path = args.out.resolve()
    src = out / "src"
    shutil.rmtree(src, ignore_errors=True)
    shutil.copytree(HERE, src / "benches", ignore=shutil.ignore_patterns("__pycache__"))
    (src / "tests").mkdir()
    for name in ("__init__.py", "conftest.py"):
        shutil.copy(HERE.parent / "tests" / name, src / "tests" / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS")}
    env.pop("PYTHONPATH", None)
    venvs = {"old": args.old, "new": args.new}
    meta: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    for wheel, venv in venvs.items():
        python = str(Path(venv) / "bin" / "python")
        where = subprocess.run(
            [python, "-c", "import lfr, lfr._core as c; print(c.__file__)"],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.strip()
        if not where.startswith(str(Path(venv).resolve())):
            raise SystemExit(f"{wheel}: lfr imports from {where}, not from {venv}")
        meta[f"{wheel}_core"] = where
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for wheel in order:
            python = str(Path(venvs[wheel]) / "bin" / "python")
            load = os.getloadavg()
            pytest = [python, "-m", "pytest", *FILES, "--benchmark-only", "-q"]
            pytest += ["-k", args.select, "-p", "no:cacheprovider"]
            pytest.append(f"--benchmark-json={out}/{wheel}-{r}.json")
            subprocess.run(pytest, cwd=src, env=env, check=True, timeout=3600)
            probe = [python, str(src / "benches" / "compare_wheels.py"), "probe"]
            probe.append(str(out / f"{wheel}-{r}-probe.json"))
            subprocess.run(probe, cwd=src, env=env, check=True, timeout=600)
            meta.setdefault("runs", []).append(
                {
                    "wheel": wheel,
                    "round": r,
                    "load_before": load,
                    "load_after": os.getloadavg(),
                }
            )
            (out / "meta.json").write_text(json.dumps(meta, indent=1))
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    print("\n".join(report(out)))


def fmt(seconds: float) -> str:
    """A duration with a readable unit."""
    if seconds < 1e-6:
        return f"{seconds * 1e9:.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    return f"{seconds * 1e3:.2f} ms"


def compare(out: Path) -> dict[str, dict[str, Any]]:
    """Per case: old and new medians, difference and spread in percent, verdict."""
    rounds: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(out.glob("*.json")):
        wheel, _, rest = path.stem.partition("-")
        if wheel not in ("old", "new"):
            continue
        found = json.loads(path.read_text()) if rest.endswith("probe") else _load(path)
        for name, median in found.items():
            rounds[name][wheel].append(median)
    result = {}
    for name, by in rounds.items():
        if len(by["old"]) == 0 or len(by["new"]) == 0:
            continue
        med = {w: statistics.median(v) for w, v in by.items()}
        spread = max((max(v) - min(v)) / med[w] * 100 for w, v in by.items())
        diff = (med["new"] / med["old"] - 1) * 100
        if abs(diff) <= LIMIT:
            verdict = "within 5%"
        elif abs(diff) <= spread:
            verdict = "within spread"
        else:
            verdict = "SLOWER" if diff > 0 else "faster"
        result[name] = {
            "old": med["old"],
            "new": med["new"],
            "diff": diff,
            "spread": spread,
            "verdict": verdict,
            "rounds": min(len(v) for v in by.values()),
        }
    return result


def _table(rows: dict[str, dict[str, Any]], label: str) -> list[str]:
    lines = [
        f"| {label} | old | new | new vs old | spread | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, c in rows.items():
        lines.append(
            f"| {name} | {fmt(c['old'])} | {fmt(c['new'])} | {c['diff']:+.1f}% "
            f"| {c['spread']:.1f}% | {c['verdict']} |"
        )
    return [*lines, ""]


def _matcher_key(name: str) -> tuple[Any, ...]:
    # test_search[lfr-f32-N1000-d128-b1-t1]
    impl, n, d, b, t = name[len("test_search[") : -1].rsplit("-", 4)
    return (impl, int(d[1:]), int(t[1:]), int(n[1:]), int(b[1:]))


def report(out: Path) -> list[str]:
    """Markdown tables: call overhead, secure memory, matcher, controls."""
    result = compare(out)
    search = {k: v for k, v in result.items() if k.startswith("test_search[")}
    secure = {
        k: v for k, v in result.items() if k.startswith(("test_wipe", "test_pool"))
    }
    probe = {k: v for k, v in result.items() if k not in search and k not in secure}
    lfr_rows = sorted(
        (k for k in search if k[12:].startswith("lfr-")), key=_matcher_key
    )
    control = sorted((k for k in search if k not in lfr_rows), key=_matcher_key)
    small = [k for k in lfr_rows if "-N1000-d128-b1-" in k]
    lines = [
        "Call overhead (timeit probes, then the N = 1,000 dim 128 b = 1 cases):",
        "",
    ]
    lines += _table({**probe, **{k[12:-1]: search[k] for k in small}}, "call")
    lines += ["Secure memory (benches/test_secure.py):", ""]
    lines += _table({k[5:]: secure[k] for k in sorted(secure)}, "case")
    lines += ["Matcher, lfr (benches/test_matcher.py, `impl-N-dim-batch-threads`):", ""]
    lines += _table({k[12:-1]: search[k] for k in lfr_rows}, "case")
    lines += ["Controls, numpy and FAISS (identical in both runs):", ""]
    lines += _table({k[12:-1]: search[k] for k in control}, "case")
    verdicts: dict[str, int] = defaultdict(int)
    for c in result.values():
        verdicts[c["verdict"]] += 1
    lines.append(
        "Summary: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    )
    return lines


def main(argv: list[str]) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run")
    p_run.add_argument("--old", type=Path, required=True, help="the old wheel's venv")
    p_run.add_argument("--new", type=Path, required=True, help="the new wheel's venv")
    p_run.add_argument("--out", type=Path, required=True)
    p_run.add_argument("--rounds", type=int, default=3)
    p_run.add_argument(
        "--select", default=SELECT, help=f"pytest -k expression (default: {SELECT})"
    )
    p_report = sub.add_parser("report")
    p_report.add_argument("out", type=Path)
    p_probe = sub.add_parser("probe")
    p_probe.add_argument("json", type=Path)
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args)
    elif args.command == "report":
        print("\n".join(report(args.out)))
    else:
        args.json.write_text(json.dumps(probes(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
