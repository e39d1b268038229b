"""matplotlib is the optional extra ``lfr[eval]``: lfr works without it.

Each check runs in a fresh interpreter where ``import matplotlib`` fails
(``sys.modules["matplotlib"] = None``), as on an install without the extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PYTHON = Path(__file__).resolve().parents[2] / "python"
BLOCK = "import sys; sys.modules['matplotlib'] = None\n"
HINT = "pip install 'lfr[eval]'"


def _python(code: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PYTHON), os.environ.get("PYTHONPATH", "")]),
        # No model: lfr eval fails at its first model, before any photo is read.
        "LFR_MODEL_DIR": str(tmp / "no-models"),
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_the_block_makes_matplotlib_unimportable(tmp_path: Path) -> None:
    # The control for the tests below: the block is what an install without it does.
    done = _python(BLOCK + "import matplotlib", tmp_path)
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr or "ImportError" in done.stderr


def test_lfr_imports_without_matplotlib(tmp_path: Path) -> None:
    code = BLOCK + (
        "import lfr, lfr.cli, lfr.evaluation\n"
        "assert sys.modules['matplotlib'] is None, 'something imported it'\n"
        "print(lfr.__version__)"
    )
    done = _python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == __import__("lfr").__version__


def _eval(tmp: Path, *args: str, block: bool) -> subprocess.CompletedProcess[str]:
    (tmp / "data" / "identities" / "a").mkdir(parents=True, exist_ok=True)
    argv = ["eval", str(tmp / "data"), "--no-cache", *args]
    code = (BLOCK if block else "import sys\n") + (
        f"from lfr.cli import main\nsys.exit(main({argv!r}))"
    )
    return _python(code, tmp)


def test_eval_plots_without_matplotlib_name_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = _eval(tmp_path, "--out", str(out), block=True)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("lfr eval:")]
    assert len(lines) == 1, done.stderr
    assert HINT in lines[0]
    assert "Traceback" not in done.stderr
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    ("args", "block"),
    [((), True), (("--out", "report"), False)],
    ids=["no-plot-without-matplotlib", "plots-with-matplotlib"],
)
def test_eval_asks_for_the_extra_only_when_it_would_plot_without_it(
    tmp_path: Path, args: tuple[str, ...], block: bool
) -> None:
    # Controls: without --out, or with matplotlib, eval goes on to its models
    # (none here) and fails there, not on the extra.
    done = _eval(tmp_path, *(str(tmp_path / a) if a == "report" else a for a in args),
                 block=block)  # fmt: skip
    assert done.returncode == 1
    assert HINT not in done.stderr
    assert "lfr models fetch" in done.stderr, done.stderr
