"""bench/gpu_check.sh: its CPU dry run goes through every step, and asking for a GPU that is
not there stops at once with a message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def gpu_check():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_check

        yield gpu_check
    finally:
        sys.path.remove(str(BENCH))


def test_dry_run_on_cpu(gpu_check, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny sizes: both "devices" are the CPU, so the runs agree exactly."""
    monkeypatch.setitem(gpu_check.SIZES["cpu"], "sample_users", 15)
    monkeypatch.setitem(gpu_check.SIZES["cpu"], "slice_users", 10)
    result = gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--synthetic-users", "20"])
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["agreement"] == result["agreement"]
    assert set(saved["agreement"]) == {"taobao sample", "synthetic slice"}
    assert all(check["match"] and check["auc_gap"] == 0 for check in saved["agreement"].values())
    assert len(saved["runs"]) == 5 and all(run["events"] > 0 for run in saved["runs"])
    section = (tmp_path / "gpu_check.md").read_text()
    assert section.startswith("## GPU check (CPU dry run") and "RecBole SASRec: skipped" in section


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="a GPU is here: nothing is missing"
)
def test_missing_gpu_is_a_loud_error(tmp_path: Path) -> None:
    env = {**os.environ, "DEVICE": "cuda", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "gpu_check: --device cuda" in done.stderr and "--device cpu" in done.stderr
    assert not (tmp_path / "gpu_check.json").exists()
