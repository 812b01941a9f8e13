"""`ebbtide evaluate` on the bundled sample: one table, JSON and Markdown, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from ebbtide.datasets import taobao_sample_path


def test_evaluate_writes_the_comparison(cli, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    assert cli("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet").exit_code == 0
    report, markdown = tmp_path / "eval.json", tmp_path / "eval.md"
    result = cli("evaluate", "--db", str(db), "--models", "popular,decay", "--cutoff",
         "2017-12-02T00:00+08:00", "--horizon", "1d", "--k", "10", "--json", str(report),
         "--markdown", str(markdown), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "re-engage AUC" in result.output and "recall@10" in result.output
    payload = json.loads(report.read_text())
    assert [m["model"] for m in payload["models"]] == ["popular", "decay"]
    assert payload["split"]["users"] == 815 and payload["split"]["horizon_days"] == 1
    assert "| decay |" in markdown.read_text()
    bad = cli("evaluate", "--db", str(db), "--models", "nope", "--quiet")
    assert bad.exit_code == 1 and "no model family 'nope'" in bad.output


def test_evaluate_leave_one_out(cli, tmp_path: Path) -> None:
    db = tmp_path / "shop.duckdb"
    assert cli("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet").exit_code == 0
    report = tmp_path / "loo.json"
    result = cli("evaluate", "--db", str(db), "--protocol", "loo", "--models", "popular",
         "--json", str(report), "--quiet")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "test ndcg@10" in result.output
    payload = json.loads(report.read_text())
    assert payload["protocol"] == "leave-one-out" and payload["split"]["users"] == 815
    bad = cli("evaluate", "--db", str(db), "--protocol", "kfold", "--quiet")
    assert bad.exit_code == 1 and "holdout or loo" in bad.output
