"""A published RCT without a user id column (Hillstrom's MineThatData e-mail test): rows are
the units, for the library and for `campaign analyze` / `campaign uplift`; joining the store
is refused with what to add."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ebbtide.activate.campaign_analysis import analyze_campaign
from ebbtide.activate.campaign_log import (
    prepare_campaign,
    read_campaign_log,
    require_user_column,
)
from ebbtide.activate.uplift import compare_learners
from ebbtide.cli import app
from ebbtide.errors import CampaignLogError, CampaignWarning
from ebbtide.store import EventStore

#: Rows: 800 per arm, because the uplift learners keep 200 rows per leaf (effects are
#: small differences of noisy outcomes), so an effect that differs by group needs a few
#: hundred treated rows on each side of the split to be seen at all.
N = 2400
CONTROL, MENS, WOMENS = "No E-Mail", "Mens E-Mail", "Womens E-Mail"
BASE_VISIT = 0.10
#: True effect of the men's e-mail on visit: +0.30 for newbies, 0 for the others.
MENS_EFFECT_NEWBIE = 0.30
#: True effect of the women's e-mail on visit, for everyone.
WOMENS_EFFECT = 0.08
MISSING_SPEND_ROWS = (5, 77, 300, N - 1)  # 0-based rows with an empty spend field


def _hillstrom(seed: int = 14) -> pd.DataFrame:
    """Hillstrom's 12 columns, in his order, with known effects on ``visit``."""
    rng = np.random.default_rng(seed)
    history = np.round(rng.lognormal(5.0, 0.8, N), 2)
    segment = rng.permutation(np.repeat([MENS, WOMENS, CONTROL], N // 3))
    newbie = rng.integers(0, 2, N)
    effect = np.select(
        [segment == MENS, segment == WOMENS], [MENS_EFFECT_NEWBIE * newbie, WOMENS_EFFECT], 0.0
    )
    visit = (rng.random(N) < BASE_VISIT + effect).astype(int)
    conversion = visit * (rng.random(N) < 0.2)
    bands = np.array(["1) $0 - $100", "2) $100 - $200", "3) $200 - $350", "4) $350 - $500"])
    mens = rng.integers(0, 2, N)
    frame = pd.DataFrame(
        {
            "recency": rng.integers(1, 13, N),
            "history_segment": bands[np.clip(np.searchsorted([100, 200, 350], history), 0, 3)],
            "history": history,
            "mens": mens,
            "womens": np.where(mens == 1, rng.integers(0, 2, N), 1),
            "zip_code": rng.choice(["Surburban", "Urban", "Rural"], N),
            "newbie": newbie,
            "channel": rng.choice(["Phone", "Web", "Multichannel"], N),
            "segment": segment,
            "visit": visit,
            "conversion": conversion,
            "spend": np.round(conversion * rng.gamma(2.0, 60.0, N), 2),
        }
    )
    frame["spend"] = frame["spend"].astype(object)
    frame.loc[list(MISSING_SPEND_ROWS), "spend"] = None
    return frame


@pytest.fixture(scope="module")
def log_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("hillstrom") / "hillstrom.csv"
    _hillstrom().to_csv(path, index=False)
    return path


def _true_visit_effect(frame: pd.DataFrame, arm: str) -> float:
    """The sample's true average effect of `arm` (its newbie share is not exactly half)."""
    if arm == WOMENS:
        return WOMENS_EFFECT
    return MENS_EFFECT_NEWBIE * frame.loc[frame.segment == arm, "newbie"].mean()


def test_rows_are_the_units_and_every_row_is_accounted_for(log_path: Path) -> None:
    frame = read_campaign_log(log_path)
    assert "user_id" not in frame.columns and len(frame) == N
    with pytest.warns(CampaignWarning) as caught:
        data = prepare_campaign(
            frame, arm_col="segment", control=CONTROL, outcomes=["visit", "conversion", "spend"]
        )
    messages = [str(w.message) for w in caught]
    assert any(f"each of its {N} rows is taken as one customer" in m for m in messages)
    assert any(f"dropped 4 of {N} rows (4 × outcome spend unusable)" in m for m in messages)
    assert data.rows_are_units and data.user_col == "user_id"
    assert len(data.frame) + len(data.dropped) == N
    assert data.frame["user_id"].is_unique
    # ids are row numbers in the file, dropped rows keep theirs
    assert data.frame["user_id"].iloc[:3].tolist() == ["row_1", "row_2", "row_3"]
    assert sorted(data.dropped["user_id"]) == sorted(f"row_{i + 1}" for i in MISSING_SPEND_ROWS)
    assert data.arm_counts().sum() == N - len(MISSING_SPEND_ROWS)


def test_ids_follow_position_whatever_the_index() -> None:
    frame = _hillstrom().iloc[::-1]  # index N-1 ... 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        data = prepare_campaign(frame, arm_col="segment", control=CONTROL, outcomes="visit")
    assert data.frame["user_id"].iloc[0] == "row_1" and data.frame.index[0] == N - 1


def test_analyze_estimates_the_known_effects(log_path: Path) -> None:
    frame = read_campaign_log(log_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        data = prepare_campaign(frame, arm_col="segment", control=CONTROL, outcomes=["visit"])
        result = analyze_campaign(data, features=["recency", "history", "newbie"], n_bootstrap=20)
    assert result.n_rows + result.n_dropped == N
    table = result.ab.table.set_index("arm")
    for arm in (MENS, WOMENS):
        truth = _true_visit_effect(frame, arm)
        row = table.loc[arm]
        assert row.diff_ci_low < truth < row.diff_ci_high
        assert row["diff"] == pytest.approx(truth, abs=0.04)
    assert table.loc[MENS, "p_value_holm"] < 1e-6
    assert any("taken as one customer" in note for note in result.notes)
    # the learned uplift finds who the men's e-mail moves: newbies
    newbie = data.frame["newbie"].to_numpy() == 1
    gap = result.scores[MENS][newbie].mean() - result.scores[MENS][~newbie].mean()
    assert gap > 0.1


def test_uplift_learners_find_the_effect(log_path: Path) -> None:
    frame = read_campaign_log(log_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        data = prepare_campaign(
            frame, arm_col="segment", control=CONTROL, outcomes=["visit"], treatments=[MENS]
        )
    assert len(data.frame) + len(data.dropped) == N  # the women's arm is dropped, and counted
    assert set(data.dropped["segment"]) == {WOMENS}
    treated = data.arm == MENS
    comparison = compare_learners(
        data.frame, treated, data.outcome_values("visit"), ["recency", "history", "newbie"],
        learners=["t"], seed=0,
    )  # fmt: skip
    assert comparison.n_train + comparison.n_test == len(data.frame)
    tau = comparison.models["t"].predict(data.frame[["recency", "history", "newbie"]])
    assert tau.mean() == pytest.approx(_true_visit_effect(frame, MENS), abs=0.07)
    qini = comparison.table.set_index("learner")["qini"]
    assert qini["t"] > qini["random"]


def _run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_analyze_runs_on_a_log_without_ids(log_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "analysis.json"
    result = _run(
        "campaign", "analyze", str(log_path), "--arm-col", "segment", "--control", CONTROL,
        "--outcomes", "visit,conversion,spend", "--json", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert f"each of its {N} rows is taken as one customer" in flat
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["rows_used"] + report["rows_dropped"] == N
    assert report["rows_dropped"] == len(MISSING_SPEND_ROWS)
    rows = {(r["arm"], r["outcome"]): r for r in report["ab"]["table"]}
    frame = _hillstrom()
    kept = frame.drop(index=list(MISSING_SPEND_ROWS))
    for arm in (MENS, WOMENS):
        row = rows[(arm, "visit")]
        expected = (
            kept.loc[kept.segment == arm, "visit"].mean()
            - kept.loc[kept.segment == CONTROL, "visit"].mean()
        )
        assert row["diff"] == pytest.approx(expected, abs=1e-12)
        assert row["diff_ci_low"] < _true_visit_effect(frame, arm) < row["diff_ci_high"]
        assert row["n_arm"] == (kept.segment == arm).sum()


def test_cli_uplift_runs_on_a_log_without_ids(log_path: Path, tmp_path: Path) -> None:
    out, scores = tmp_path / "uplift.json", tmp_path / "scores.csv"
    result = _run(
        "campaign", "uplift", str(log_path), "--arm-col", "segment", "--control", CONTROL,
        "--treatments", MENS, "--outcomes", "visit", "--features", "recency,history,newbie",
        "--learners", "t,x", "--json", str(out), "--score-out", str(scores),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "taken as one customer" in flat
    third = N // 3  # the women's arm, not modelled here
    assert f"dropped {third} of {N} rows ({third} × arm not in control/treatments)" in flat
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["n_train"] + report["n_test"] == N - third
    written = pd.read_csv(scores)
    assert len(written) == N - third and written["user_id"].str.match(r"row_\d+$").all()
    frame = _hillstrom()
    assert written["uplift_t"].mean() == pytest.approx(_true_visit_effect(frame, MENS), abs=0.07)


def test_store_join_without_ids_is_refused_with_what_to_add(log_path: Path, tmp_path: Path):
    frame = read_campaign_log(log_path)
    with pytest.raises(CampaignLogError, match="add a column with each row's user id"):
        require_user_column(frame)
    with pytest.raises(CampaignLogError, match="cannot be matched to the event store"):
        prepare_campaign(
            frame, arm_col="segment", control=CONTROL, outcomes="visit", known_users=["a"]
        )
    for extra in ([], ["--at", "2017-12-01"]):
        result = _run(
            "campaign", "uplift", str(log_path), "--arm-col", "segment", "--control", CONTROL,
            "--treatments", MENS, "--outcomes", "visit", "--db", str(tmp_path / "none.duckdb"),
            *extra,
        )  # fmt: skip
        flat = " ".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert "no user id column 'user_id'" in flat and "Traceback" not in flat
    with EventStore(tmp_path / "store.duckdb"):
        pass  # an empty store: the refusal comes before any feature is computed
    for extra in ([], ["--at", "2017-12-01"]):
        result = _run(
            "campaign", "analyze", str(log_path), "--arm-col", "segment", "--control", CONTROL,
            "--outcomes", "visit", "--db", str(tmp_path / "store.duckdb"), *extra,
        )  # fmt: skip
        flat = " ".join(result.output.split())
        assert result.exit_code == 1, result.output
        assert "add a column with each row's user id" in flat and "Traceback" not in flat


def test_a_named_id_column_that_is_missing_is_still_an_error() -> None:
    frame = _hillstrom()
    with pytest.raises(CampaignLogError, match=r"lacks column\(s\) \['customer'\]") as info:
        prepare_campaign(
            frame, arm_col="segment", control=CONTROL, outcomes="visit", user_col="customer"
        )
    assert "leave the user id column at its default 'user_id'" in " ".join(str(info.value).split())
