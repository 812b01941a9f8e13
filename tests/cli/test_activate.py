"""The activation commands end to end, in process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ebbtide.datasets import taobao_sample_path


def test_segments_with_early_warning(cli, tmp_path: Path) -> None:
    db, model = tmp_path / "shop.duckdb", tmp_path / "decay"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    cut = "2017-12-02T00:00+08:00"
    cli.ok("train", "--db", str(db), "--model", "decay", "--cutoff", cut, "--out-dir", str(model))
    segments, warning = tmp_path / "seg.csv", tmp_path / "warn.csv"
    result = cli.ok(
        "segments", "--db", str(db), "--model-dir", str(model), "--at", cut,
        "--horizon", "1d", "--compare-at", "2017-11-30T00:00+08:00",
        "--out", str(segments), "--warning-out", str(warning),
    )  # fmt: skip
    table = pd.read_csv(segments, dtype={"user_id": str})
    assert len(table) == 815 and table.user_id.is_unique
    assert table.reason.notna().all()
    for name, count in table.segment.value_counts().items():
        assert name in result.output and f"{count:,}" in result.output
    ranked = pd.read_csv(warning, dtype={"user_id": str})
    assert list(ranked["rank"]) == list(range(1, len(ranked) + 1)) and len(ranked) == 100
    assert ranked.reason.str.startswith("interest at ").all()
    assert ranked.interest_vs_usual.notna().all()
    # --compare-at is before the saved model's cut-off: the earlier scores come from the
    # family refitted there, never from parameters that saw what came after
    from datetime import datetime, timedelta

    from ebbtide.features.history import snapshot
    from ebbtide.models.decay import DecayModel
    from ebbtide.store import EventStore

    then = datetime.fromisoformat("2017-11-30T00:00+08:00")
    with EventStore(db, read_only=True) as store:
        history = snapshot(store, at=then)
        earlier = DecayModel().fit(history).p_return(history, horizon=timedelta(days=1))
    expected = earlier.set_index("user_id").loc[ranked.user_id, "p_return"].to_numpy()
    np.testing.assert_allclose(ranked.p_return_before.to_numpy(), expected, rtol=1e-12)


def test_plan_writes_one_row_per_user_within_budget(cli, tmp_path: Path) -> None:
    db, model = tmp_path / "shop.duckdb", tmp_path / "decay"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    cut = "2017-12-02T00:00+08:00"
    cli.ok("train", "--db", str(db), "--model", "decay", "--cutoff", cut, "--out-dir", str(model))
    contacts, plan, summary = tmp_path / "c.csv", tmp_path / "plan.parquet", tmp_path / "s.json"
    contacts.write_text("user_id,last_contact\n1000027,2017-11-30T10:00+08:00\n")
    result = cli.ok(
        "plan", "--db", str(db), "--model-dir", str(model), "--at", cut, "--budget", "20",
        "--order-value", "30", "--contacts", str(contacts), "--out", str(plan),
        "--json", str(summary),
    )  # fmt: skip
    table = pd.read_parquet(plan)
    assert len(table) == 815 and table.user_id.is_unique
    assert table.cost.sum() <= 20 + 1e-9
    assert table.set_index("user_id").loc["1000027", "action"] == "none"
    headline = json.loads(summary.read_text())
    assert headline["contacts"] == (table.action != "none").sum() > 0
    assert "prior response model" in result.output
    late = tmp_path / "late.csv"
    late.write_text("user_id,last_contact\n1000027,2017-12-05\n")
    bad = cli(
        "plan", "--db", str(db), "--model-dir", str(model), "--at", cut, "--contacts", str(late)
    )
    assert bad.exit_code == 1 and "after --at" in bad.output


def test_learned_uplift_from_store_features_feeds_the_plan(cli, tmp_path: Path) -> None:
    """campaign log of store users -> uplift on store_* features -> effects -> plan."""
    db, model = tmp_path / "shop.duckdb", tmp_path / "decay"
    cli.ok("ingest", str(taobao_sample_path()), "--db", str(db), "--quiet")
    start = "2017-12-01T00:00+08:00"
    cli.ok("train", "--db", str(db), "--model", "decay", "--cutoff", start, "--out-dir", str(model))
    cli.ok("segments", "--db", str(db), "--model-dir", str(model), "--at", start,
        "--out", str(tmp_path / "seg.csv"))  # fmt: skip
    ids = pd.read_csv(tmp_path / "seg.csv", dtype={"user_id": str}).user_id
    rng = np.random.default_rng(0)
    arm = rng.choice(["control", "push"], size=len(ids))
    log = pd.DataFrame({"user_id": [*ids, "stranger"], "arm": [*arm, "push"]})
    log["conversion"] = (rng.random(len(log)) < 0.2 + 0.1 * (log.arm == "push")).astype(int)
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    effects = tmp_path / "effects.parquet"
    result = cli.ok(
        "campaign", "uplift", str(path), "--arm-col", "arm", "--control", "control",
        "--treatments", "push", "--outcomes", "conversion", "--db", str(db), "--model-dir",
        str(model), "--at", start, "--effects-out", str(effects), "--effects-at",
        "2017-12-02T00:00+08:00", "--actions", "push,email",
    )  # fmt: skip
    assert "1 of 816 users have no events" in result.output
    table = pd.read_parquet(effects)
    assert set(table.action) == {"push", "email"} and len(table) == 2 * 815
    assert np.isfinite(table.uplift).all()
    plan = tmp_path / "plan.parquet"
    cli.ok("plan", "--db", str(db), "--model-dir", str(model), "--at", "2017-12-02T00:00+08:00",
        "--effects", str(effects), "--budget", "1", "--out", str(plan))  # fmt: skip
    planned = pd.read_parquet(plan)
    assert not planned.assumption.any() and planned.cost.sum() <= 1 + 1e-9
    contacted = planned[planned.action != "none"]
    assert len(contacted) > 0 and (contacted.expected_uplift > 0).all()
    bad = cli("campaign", "uplift", str(path), "--arm-col", "arm", "--control", "control",
         "--treatments", "push", "--outcomes", "conversion", "--features", "arm",
         "--effects-out", str(effects))  # fmt: skip
    assert bad.exit_code == 1 and "--db and --at" in bad.output
    # features at a campaign start before the saved model's cut-off would encode the
    # outcome: refused in one line; --model fits the family at the start instead
    early = "2017-11-30T00:00+08:00"
    base = [
        "campaign", "uplift", str(path), "--arm-col", "arm", "--control", "control",
        "--treatments", "push", "--outcomes", "conversion", "--db", str(db), "--at", early,
        "--features", "store_p_return,store_events",
    ]  # fmt: skip
    leak = cli(*base, "--model-dir", str(model))
    assert leak.exit_code == 1 and "earlier instant" in leak.stderr
    assert len(leak.stderr.strip().splitlines()) == 1
    fitted_there = cli.ok(*base, "--model", "decay")
    assert "push vs control on conversion" in fitted_there.output
