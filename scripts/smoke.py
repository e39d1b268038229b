"""Smoke test of an installed lfr wheel, in a fresh virtual environment.

    python3.X scripts/smoke.py WHEEL [--data DIR] [--keep]

Run with the Python to test: it makes a virtual environment with that Python in a
new temporary directory (outside the source tree), installs the wheel there with its
runtime dependencies only (pip's own cache is reused), then, from that directory and
with ``python -I`` (so nothing of the checkout can be imported), checks:

- ``import lfr`` works, comes from the environment, and did not import matplotlib;
- a :class:`lfr.Matcher` search finds the known answer (f32, f16 and i8);
- a :class:`lfr.SecureBuffer` round trip: bytes written through ``memoryview`` and
  numpy read back, ``wipe()`` leaves zeros, ``close()`` closes it;
- :class:`lfr.FaceDetector` and :class:`lfr.FaceEmbedder` on one face photograph
  from ``LFR_DATA_DIR`` (the models as ``lfr models fetch`` left them: the default
  cache or ``LFR_MODEL_DIR``);
- ``lfr demo`` with two enrolled and two unknown people exits 0.

Warnings that lfr's own code raises (deprecated calls on a newer Python) fail the
checks. The temporary directory is removed afterwards unless ``--keep``. Prints the
wall time of each step and exits non-zero on the first failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 900
CHECK_TIMEOUT_S = 600
DEMO_TIMEOUT_S = 300


def _default_data() -> Path:
    configured = os.environ.get("LFR_DATA_DIR")
    return Path(configured) if configured else REPO.parent / "shared" / "data"


def _run(
    argv: list[str],
    timeout: int,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    quiet: bool = False,
) -> None:
    """Runs ``argv``; ``quiet``: its output is shown only when it fails."""
    done = subprocess.run(
        argv, timeout=timeout, check=False, cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE if quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
    )  # fmt: skip
    if done.returncode != 0:
        if quiet:
            print(done.stdout, end="", flush=True)
        raise SystemExit(f"smoke: failed ({done.returncode}): {' '.join(argv)}")


def outside(wheel: Path, data: Path, keep: bool) -> None:
    """Makes the environment, installs ``wheel`` and runs the checks in it."""
    if not wheel.is_file():
        raise SystemExit(f"smoke: no wheel at {wheel}")
    if not (data / "lfw-dev" / "identities").is_dir():
        raise SystemExit(
            f"smoke: no face photographs at {data}/lfw-dev (set LFR_DATA_DIR)"
        )
    version = ".".join(map(str, sys.version_info[:3]))
    work = Path(tempfile.mkdtemp(prefix=f"lfr-smoke-{version}-"))
    timings: list[tuple[str, float]] = []
    try:
        started = time.monotonic()
        _run([sys.executable, "-m", "venv", str(work / "venv")], 120)
        python = str(work / "venv" / "bin" / "python")
        timings.append(("venv", time.monotonic() - started))
        started = time.monotonic()
        _run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--only-binary", ":all:", str(wheel)],
            INSTALL_TIMEOUT_S,
        )  # fmt: skip
        timings.append(("install", time.monotonic() - started))
        script = work / "smoke.py"
        shutil.copyfile(__file__, script)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["LFR_DATA_DIR"] = str(data)
        started = time.monotonic()
        _run(
            [python, "-I", str(script), "--inside", "--data", str(data),
             "--work", str(work)],
            CHECK_TIMEOUT_S, cwd=work, env=env,
        )  # fmt: skip
        timings.append(("checks", time.monotonic() - started))
    finally:
        if keep:
            print(f"smoke: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = sum(seconds for _, seconds in timings)
    steps = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings)
    print(f"smoke: Python {version}: passed in {total:.1f} s ({steps})")


def _check(name: str, started: float) -> None:
    print(f"  ok  {name} ({time.monotonic() - started:.1f} s)", flush=True)


def _expect(ok: object, what: str) -> None:
    if not ok:  # not an assert: ``python -O`` would skip it
        raise SystemExit(f"smoke: FAILED: {what}")


def inside(data: Path, work: Path) -> None:
    """The checks, run by the environment's Python from ``work``."""
    import warnings

    # A deprecated call in lfr's own code is an error here, as under pytest.
    for category in (DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("error", category=category, module=r"lfr(\.|$)")

    started = time.monotonic()
    import lfr

    origin = Path(lfr.__file__).resolve()
    prefix = Path(sys.prefix).resolve()
    _expect(prefix in origin.parents, f"lfr imported from {origin}, not {prefix}")
    _expect("matplotlib" not in sys.modules, "import lfr imported matplotlib")
    _check(f"import lfr {lfr.__version__} from {origin.parent}", started)

    import numpy as np

    started = time.monotonic()
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((50, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1000, 1050, dtype=np.int64)
    noise = rng.standard_normal((2, 128)).astype(np.float32)
    queries = vectors[[17, 3]] + np.float32(0.01) * noise
    for dtype in ("f32", "f16", "i8"):
        matcher = lfr.Matcher(dim=128, dtype=dtype)
        matcher.add(ids, vectors)
        found, scores = matcher.search(queries, k=2)
        _expect(found[:, 0].tolist() == [1017, 1003], f"{dtype}: found {found}")
        _expect((scores[:, 0] > 0.99).all(), f"{dtype}: best scores {scores}")
        _expect((scores[:, 1] < 0.6).all(), f"{dtype}: second scores {scores}")
    _check("Matcher.search finds the known answer (f32, f16, i8)", started)

    started = time.monotonic()
    buf = lfr.SecureBuffer(64)
    view = buf.memoryview()
    view[:5] = b"hello"
    arr = buf.array(np.uint8, (64,))
    arr[5:8] = (1, 2, 3)
    _expect(bytes(view[:8]) == b"hello\x01\x02\x03", f"read back {bytes(view[:8])!r}")
    _expect(arr[:5].tobytes() == b"hello", "numpy does not see memoryview's bytes")
    buf.wipe()
    _expect(not np.asarray(buf).any(), "wipe() left non-zero bytes")
    _expect(bytes(view) == bytes(64), "wipe() left non-zero bytes in a view")
    _expect(buf.views == 2, f"views {buf.views}, expected 2 (the memoryview, arr)")
    try:
        buf.close()
    except BufferError:
        pass
    else:
        raise SystemExit("smoke: close() succeeded while views existed")
    view.release()
    del arr
    if sys.version_info >= (3, 12):
        whole = memoryview(buf)  # PEP 688
        _expect(whole.nbytes == 64 and buf.views == 1, "memoryview(buf) on 3.12+")
        whole.release()
    _expect(buf.views == 0, f"views {buf.views} after every view is gone")
    buf.close()
    _expect(buf.closed, "close() did not close the buffer")
    probes = [
        n
        for n in ("scan_memory", "scan_process", "read_bandwidth", "peak_flops")
        if hasattr(lfr._core, n)
    ]
    _expect(not probes, f"the release wheel carries test/bench tools: {probes}")
    _check(
        "SecureBuffer write, read back, views counted, wipe to zeros, close; "
        "no scanner or probes in the release wheel",
        started,
    )

    import cv2

    started = time.monotonic()
    photo = min((data / "lfw-dev" / "identities").glob("*/*.jpg"))
    image = cv2.imread(str(photo))
    _expect(image is not None, f"cannot read {photo}")
    frame = np.ascontiguousarray(image, dtype=np.uint8)
    with lfr.FaceDetector() as detector:
        faces = detector.detect(frame)
    _expect(len(faces) >= 1, f"no face found in {photo.name}")
    embedder = lfr.FaceEmbedder()
    vecs = embedder.embed(frame, faces)
    _expect(vecs.shape == (len(faces), embedder.dim), f"embeddings {vecs.shape}")
    norms = np.linalg.norm(vecs, axis=1)
    _expect(np.allclose(norms, 1.0, atol=1e-3), f"embedding norms {norms}")
    again = embedder.embed(frame, faces)
    same = float(np.dot(vecs[0], again[0]))
    _expect(same > 0.999, f"the same face embeds differently ({same})")
    _check(f"detect + embed: {len(faces)} face(s) in {photo.name}", started)
    del vecs, again

    started = time.monotonic()
    lfr_command = Path(sys.executable).parent / "lfr"
    _run(
        [str(lfr_command), "demo", "--data", str(data / "lfw-dev"),
         "--out", str(work / "demo"), "--enrolled", "2", "--unknown", "2"],
        DEMO_TIMEOUT_S, cwd=work, quiet=True,
    )  # fmt: skip
    _check("lfr demo --enrolled 2 --unknown 2", started)


def main() -> None:
    """Parses the arguments; see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", nargs="?", type=Path, help="the lfr wheel to test")
    parser.add_argument("--data", type=Path, default=None, help="LFR_DATA_DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary dir")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = (args.data or _default_data()).resolve()
    if args.inside:
        inside(data, args.work)
    elif args.wheel is None:
        parser.error("a wheel is needed")
    else:
        outside(args.wheel.resolve(), data, args.keep)


if __name__ == "__main__":
    main()
