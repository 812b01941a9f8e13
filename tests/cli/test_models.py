"""`ebbtide train` and `ebbtide score` end to end, in process."""

from __future__ import annotations

from pathlib import Path

import pytest

from ebbtide.datasets import taobao_sample_path


@pytest.mark.parametrize("family", ["popular", "btyd", "gbdt", "decay"])
def test_train_then_score(cli, tmp_path: Path, family: str) -> None:
    import pandas as pd

    db = tmp_path / "shop.duckdb"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    model_dir = tmp_path / family
    cut = "2017-12-02T00:00+08:00"
    cli.ok(
        "train", "--db", str(db), "--model", family, "--cutoff", cut, "--out-dir", str(model_dir)
    )
    scores = tmp_path / "scores.parquet"
    cli.ok(
        "score", "--db", str(db), "--model-dir", str(model_dir), "--at", cut, "--out", str(scores)
    )
    table = pd.read_parquet(scores)
    assert len(table) == 815 and table.user_id.is_unique
    expected = {
        "popular": {"top_items"},
        "btyd": {"p_return", "p_buy", "expected_return_days"},
        "gbdt": {"p_return", "p_buy", "top_categories"},
        "decay": {"p_return", "p_buy", "expected_return_days", "top_categories", "top_items"},
    }[family]
    assert expected <= set(table.columns)
    assert_refused_before_the_cutoff(cli, db, model_dir)


def assert_refused_before_the_cutoff(cli, db: Path, model_dir: Path) -> None:
    """A day before the cut-off the model would answer with knowledge of the future."""
    earlier = cli(
        "score", "--db", str(db), "--model-dir", str(model_dir),
        "--at", "2017-12-01T00:00+08:00", "--out", str(model_dir / "early.parquet"),
    )  # fmt: skip
    assert earlier.exit_code == 1
    lines = earlier.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "earlier instant" in lines[0]
    assert "Traceback" not in earlier.output and not (model_dir / "early.parquet").exists()


def test_train_and_score_refuse_bad_arguments(cli, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    bad = cli("train", "--db", str(db), "--model", "nope", "--out-dir", "m")
    assert bad.exit_code == 1 and "no model family 'nope'" in bad.output
    bad = cli("score", "--db", str(db), "--model-dir", str(tmp_path), "--at", "yesterday")
    assert bad.exit_code != 0 and "ISO 8601" in bad.output


def test_train_neural_checkpoints_resumes_and_refuses_a_missing_gpu(cli, tmp_path: Path) -> None:
    """Plumbing, not training: budgets of seconds (the resumed run's counts the first's)."""
    import torch

    db = tmp_path / "shop.duckdb"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    model_dir = tmp_path / "neural"
    cut = "2017-12-02T00:00+08:00"
    base = [
        "train",
        "--db",
        str(db),
        "--model",
        "neural",
        "--cutoff",
        cut,
        "--out-dir",
        str(model_dir),
    ]
    missing = cli(*base, "--resume")
    assert missing.exit_code == 1 and "no checkpoint" in missing.output
    cli.ok(*base, "--max-seconds", "2", "--seed", "1")
    assert (model_dir / "checkpoint.pt").exists() and (model_dir / "network.pt").exists()
    resumed = cli.ok(*base, "--max-seconds", "4", "--seed", "1", "--resume")
    assert "epochs" in resumed.output
    scores, interests = tmp_path / "scores.csv", tmp_path / "interests.parquet"
    cli.ok(
        "score", "--db", str(db), "--model-dir", str(model_dir), "--at", cut,
        "--out", str(scores), "--per-category-out", str(interests),
    )  # fmt: skip
    import pandas as pd

    table = pd.read_parquet(interests)
    assert {"p_engage", "interest_score", "p_activate", "half_life_days"} <= set(table.columns)
    assert table.p_activate.between(0, 1).all() and len(table) == 15_930
    assert_refused_before_the_cutoff(cli, db, model_dir)
    other = cli(*base, "--max-seconds", "4", "--seed", "2", "--resume")
    assert other.exit_code == 1 and "other data, cut-off or settings" in other.output
    if not torch.cuda.is_available():
        gpu = cli(*base, "--device", "cuda")
        assert gpu.exit_code == 1 and "no CUDA device" in gpu.output
    wrong = cli(
        "train", "--db", str(db), "--model", "decay", "--device", "cuda",
        "--out-dir", str(tmp_path / "d"),
    )  # fmt: skip
    assert wrong.exit_code == 1 and "has no setting device" in wrong.output
