"""`ebbtide train --horizons` (gbdt), `--penalizer` (btyd), `--tz` (neural): passed on, or
refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ebbtide.datasets import taobao_sample_path

CUT = "2017-12-02T00:00+08:00"


@pytest.fixture(scope="module")
def db(cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train-options") / "shop.duckdb"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(path), "--quiet")
    return path


def _train(cli, db: Path, out: Path, *extra: str):
    return cli("train", "--db", str(db), "--cutoff", CUT, "--out-dir", str(out), *extra)


def test_gbdt_trains_on_the_horizons_given_and_answers_others(cli, db: Path, tmp_path) -> None:
    result = _train(cli, db, tmp_path / "g", "--model", "gbdt", "--horizons", "6h,1d,2d")
    assert result.exit_code == 0, result.output
    assert "horizons (days)" in result.stdout
    saved = json.loads((tmp_path / "g/config.json").read_text())
    assert saved["config"]["horizons_days"] == [0.25, 1.0, 2.0]
    assert saved["metrics"]["horizons_days"] == [0.25, 1.0, 2.0]
    scores = tmp_path / "s.parquet"
    cli.ok(
        "score", "--db", str(db), "--model-dir", str(tmp_path / "g"), "--at", CUT,
        "--horizon", "30d", "--out", str(scores),
    )  # fmt: skip
    table = pd.read_parquet(scores)
    assert table.p_return.between(0, 1).all() and table.p_buy.between(0, 1).all()


def test_btyd_takes_a_penalizer(cli, db: Path, tmp_path: Path) -> None:
    result = _train(cli, db, tmp_path / "b", "--model", "btyd", "--penalizer", "0.001")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "b/config.json").read_text())
    assert saved["config"]["penalizer"] == 0.001


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--model", "popular", "--horizons", "1d"), "--horizons applies to the gbdt model only"),
        (("--model", "gbdt", "--penalizer", "0.1"), "--penalizer applies to the btyd model only"),
        (("--model", "gbdt", "--horizons", "1d,soon"), "--horizons 'soon' is not a duration"),
        (("--model", "decay", "--tz", "Asia/Shanghai"), "--tz applies to the neural model only"),
        (("--model", "neural", "--tz", "Mars/Olympus"), "Mars/Olympus"),
    ],
)
def test_options_for_another_family_or_bad_values_are_refused(
    cli, db: Path, tmp_path: Path, extra: tuple[str, ...], message: str
) -> None:
    result = _train(cli, db, tmp_path / "x", *extra)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x").exists()
