"""`ebbtide train/score --engine spark` on a lake, in process, and their refusals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CUT = "2017-12-02T00:00+08:00"


def test_train_and_score_a_lake(spark, cli, tmp_path: Path, taobao_lake: Path) -> None:
    model_dir = tmp_path / "decay"
    trained = cli.ok(
        "train", "--model", "decay", "--engine", "spark", "--spark-master", "local[2]",
        "--input", str(taobao_lake), "--cutoff", CUT, "--out-dir", str(model_dir), "--quiet",
    )  # fmt: skip
    assert "rows read" in trained.stdout and "84,475" in trained.stdout
    assert (model_dir / "weights.npz").is_file()
    scores = tmp_path / "scores.parquet"
    scored = cli.ok(
        "score", "--model-dir", str(model_dir), "--engine", "spark", "--spark-master",
        "local[2]", "--input", str(taobao_lake), "--at", CUT, "--out", str(scores),
    )  # fmt: skip
    assert "users scored" in scored.stdout and "Parquet folder" in scored.stdout
    table = pd.read_parquet(scores)
    assert len(table) == 815 and table.user_id.is_unique
    assert {"p_return", "p_buy", "expected_return_days", "segment"} <= set(table.columns)
    assert table["p_return"].between(0, 1).all()


def test_refusals_name_the_fix(spark, cli, tmp_path: Path, taobao_lake: Path) -> None:
    other = cli(
        "train", "--model", "gbdt", "--engine", "spark", "--input", str(taobao_lake),
        "--out-dir", str(tmp_path / "m"),
    )  # fmt: skip
    assert other.exit_code == 1 and "--engine spark applies to the decay model only" in other.stderr
    no_lake = cli("train", "--model", "decay", "--engine", "spark", "--out-dir", str(tmp_path))
    assert no_lake.exit_code == 1 and "--input PATH" in no_lake.stderr
    local = cli("train", "--model", "decay", "--input", "x.parquet", "--out-dir", str(tmp_path))
    assert local.exit_code == 1 and "--engine spark" in local.stderr
    missing = cli(
        "train", "--model", "decay", "--engine", "spark", "--spark-master", "local[2]",
        "--input", str(tmp_path / "none.parquet"), "--out-dir", str(tmp_path / "m"),
    )  # fmt: skip
    assert missing.exit_code == 1 and "no file or folder at" in missing.stderr
    assert "Traceback" not in missing.output
