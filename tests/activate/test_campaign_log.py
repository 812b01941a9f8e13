"""Campaign logs: reading and validating rows, every failure clear, every row counted."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ebbtide.activate.campaign_log import CampaignData, prepare_campaign, read_campaign_log
from ebbtide.errors import CampaignLogError, CampaignWarning, ConfigError
from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign


def _log(n_control: int = 6, n_push: int = 6, **extra: list) -> pd.DataFrame:
    n = n_control + n_push
    frame = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "arm": ["control"] * n_control + ["push"] * n_push,
            "conversion": [i % 2 for i in range(n)],
            "spend": [float(i) for i in range(n)],
        }
    )
    for name, values in extra.items():
        frame[name] = values
    return frame


def _prepare(frame: pd.DataFrame, **kwargs) -> CampaignData:
    options = {"arm_col": "arm", "control": "control", "outcomes": ["conversion", "spend"]}
    options.update(kwargs)
    return prepare_campaign(frame, **options)


def _quiet(frame: pd.DataFrame, **kwargs) -> CampaignData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)
        return _prepare(frame, **kwargs)


# --- reading -----------------------------------------------------------------------------------


def test_csv_keeps_user_ids_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("user_id,arm,conversion\n007,control,1\n008,push,0\n")
    frame = read_campaign_log(path)
    assert frame.user_id.tolist() == ["007", "008"]
    assert frame.conversion.tolist() == [1, 0]


def test_parquet_roundtrip_casts_ids_to_str(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pd.DataFrame({"user_id": [7, 8], "arm": ["control", "push"], "conversion": [1, 0]}).to_parquet(
        path
    )
    frame = read_campaign_log(path)
    assert frame.user_id.tolist() == ["7", "8"]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(CampaignLogError, match=r"nope\.csv: no such file"):
        read_campaign_log(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(CampaignLogError, match=r"empty\.csv: the file is empty"):
        read_campaign_log(path)


def test_blank_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text("\n\n")
    with pytest.raises(CampaignLogError, match="no header and no rows"):
        read_campaign_log(path)


def test_header_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text("user_id,arm,conversion\n")
    with pytest.raises(CampaignLogError, match=r"no rows \(columns: \['user_id', 'arm'"):
        read_campaign_log(path)


def test_binary_bytes_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "garbled.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(CampaignLogError, match=r"garbled\.csv: binary content"):
        read_campaign_log(path)


def test_non_utf8_bytes_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"user_id,arm,conversion\nu1,contr\xf4le,1\nu2,push,0\n")
    with pytest.raises(CampaignLogError, match=r"latin\.csv: not UTF-8 text"):
        read_campaign_log(path)


def test_unterminated_quote_is_a_parse_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_text('user_id,arm,conversion\nu1,control,1\nu2,"pu')
    with pytest.raises(CampaignLogError, match=r"cut\.csv: cannot parse as CSV"):
        read_campaign_log(path)


def test_truncated_csv_warns_and_its_last_row_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "truncated.csv"
    full = _log().to_csv(index=False)
    path.write_text(full[: full.rstrip("\n").rfind(",")])  # cut before the last field
    with pytest.warns(CampaignWarning, match="looks truncated"):
        frame = read_campaign_log(path)
    assert len(frame) == 12
    with pytest.warns(CampaignWarning, match=r"dropped 1 of 12 rows \(1 × outcome spend"):
        data = _prepare(frame)
    assert data.dropped.reason.tolist() == ["outcome spend missing"]
    assert len(data.frame) == 11


def test_garbage_parquet(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    path.write_text("user_id,arm\n1,control\n")
    with pytest.raises(CampaignLogError, match=r"log\.parquet: not a readable Parquet file"):
        read_campaign_log(path)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "log.xlsx"
    path.write_text("x")
    with pytest.raises(CampaignLogError, match=r"unknown file type '\.xlsx'; use \.csv or"):
        read_campaign_log(path)


# --- columns and arms --------------------------------------------------------------------------


def test_missing_columns_are_named_with_the_available_ones() -> None:
    with pytest.raises(CampaignLogError) as info:
        frame = _log().drop(columns=["spend"])
        _prepare(frame, outcomes=["conversion", "spend"], propensity_col="p")
    message = str(info.value)
    assert "['spend', 'p']" in message
    assert "available: ['user_id', 'arm', 'conversion']" in message


def test_all_treated_log_has_no_control() -> None:
    frame = _log(n_control=0, n_push=5)
    frame.loc[:1, "arm"] = "coupon"
    expected = r"control arm 'control' not found .*\['coupon', 'push'\]"
    with pytest.raises(CampaignLogError, match=expected):
        _prepare(frame)


def test_requested_treatment_absent() -> None:
    with pytest.raises(CampaignLogError, match=r"treatment arm\(s\) \['coupon'\] not found"):
        _prepare(_log(), treatments=["push", "coupon"])


def test_single_arm_only() -> None:
    with pytest.raises(CampaignLogError, match="single arm"):
        _prepare(_log(n_control=5, n_push=0))


def test_unknown_and_missing_arms_are_dropped_with_reasons() -> None:
    frame = _log()
    frame.loc[1, "arm"] = "pussh"
    frame.loc[2, "arm"] = None
    frame.loc[3, "arm"] = "  "
    frame.loc[4, "arm"] = " push "  # whitespace is not a new arm
    with pytest.warns(CampaignWarning, match=r"dropped 3 of 12 rows"):
        data = _prepare(frame, treatments=["push"])
    assert len(data.frame) + len(data.dropped) == 12
    assert data.dropped.reason.to_dict() == {
        1: "arm 'pussh' not one of ['control', 'push']",
        2: "arm missing",
        3: "arm missing",
    }
    assert data.arm_counts().to_dict() == {"control": 2, "push": 7}
    assert data.frame.loc[4, "arm"] == "push"


def test_default_treatments_in_order_of_first_appearance() -> None:
    frame = _log()
    frame.loc[[0, 7], "arm"] = ["coupon", "coupon"]
    data = _prepare(frame)
    assert data.treatments == ["coupon", "push"]
    assert data.arms == ["control", "coupon", "push"]
    assert data.arm_counts().to_dict() == {"control": 5, "coupon": 2, "push": 5}


def test_explicit_treatments_drop_other_arms_with_a_warning() -> None:
    frame = _log()
    frame.loc[[7, 8], "arm"] = "coupon"
    with pytest.warns(CampaignWarning, match=r"2 × arm not in control/treatments"):
        data = _prepare(frame, treatments=["push"])
    assert data.treatments == ["push"]
    assert set(data.arm) == {"control", "push"}


def test_integer_arm_codes_match_a_string_control() -> None:
    frame = _log()
    frame["arm"] = [0.0] * 6 + [1.0] * 5 + [np.nan]
    with pytest.warns(CampaignWarning, match="1 × arm missing"):
        data = _prepare(frame, control="0")
    assert data.arms == ["0", "1"]


def test_arm_emptied_by_cleaning() -> None:
    frame = _log(n_control=6, n_push=2)
    frame["arm"] = ["control"] * 5 + ["push"] * 2 + ["coupon"]
    frame["conversion"] = frame["conversion"].astype(object)
    frame.loc[[5, 6], "conversion"] = "abc"
    with pytest.raises(CampaignLogError, match=r"arm\(s\) \['push'\] have no rows left"):
        _quiet(frame)


def test_options_that_contradict_each_other() -> None:
    with pytest.raises(ConfigError, match="include the control"):
        _prepare(_log(), treatments=["control", "push"])
    with pytest.raises(ConfigError, match="at least one outcome"):
        _prepare(_log(), outcomes=[])
    with pytest.raises(ConfigError, match="each arm only once"):
        _prepare(_log(), treatments=["push", "push"])


def test_no_rows() -> None:
    with pytest.raises(CampaignLogError, match="no rows"):
        _prepare(_log().iloc[:0])


# --- outcomes ----------------------------------------------------------------------------------


def test_words_and_bools_become_zero_one() -> None:
    frame = _log()
    frame["visit"] = ["yes", "no", "Yes", "NO", "true", "false", "1", "0", "True", "no", "y", "n"]
    frame["flag"] = [True, False] * 6
    frame.loc[10:, "visit"] = ["yes", "no"]
    data = _prepare(frame, outcomes=["visit", "flag"])
    assert data.outcome_values("visit").tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert data.outcome_values("flag").tolist() == [1.0, 0.0] * 6
    assert data.frame["visit"].dtype == np.float64


def test_non_numeric_outcome_rows_are_dropped_with_the_value() -> None:
    frame = _log()
    frame["conversion"] = frame["conversion"].astype(object)
    frame.loc[3, "conversion"] = "abc"
    with pytest.warns(CampaignWarning, match=r"dropped 1 of 12 rows \(1 × outcome conversion"):
        data = _prepare(frame)
    assert data.dropped.reason.tolist() == ["outcome conversion not a number: 'abc'"]
    assert data.dropped.index.tolist() == [3]
    assert 3 not in data.frame.index
    assert data.outcome_values("conversion").sum() == 5  # u3 (a converter) is gone


def test_mostly_non_numeric_outcome_is_an_error() -> None:
    frame = _log()
    frame["spend"] = ["abc"] * 7 + ["1.5"] * 5
    with pytest.raises(CampaignLogError, match=r"outcome column 'spend': 7 of 12 .*probably wrong"):
        _prepare(frame)


def test_negative_spend_is_kept_but_infinite_is_dropped() -> None:
    frame = _log()
    frame.loc[2, "spend"] = -12.5
    frame.loc[5, "spend"] = np.inf
    with pytest.warns(CampaignWarning, match="1 × outcome spend unusable"):
        data = _prepare(frame)
    assert data.frame.loc[2, "spend"] == -12.5
    assert data.dropped.reason.tolist() == ["outcome spend not finite: inf"]


def test_text_numbers_parse() -> None:
    frame = _log()
    frame["spend"] = [" 1.5", "2", "-3", "4e1", "0", "0", "1", "1", "1", "1", "1", "1"]
    data = _prepare(frame)
    assert data.outcome_values("spend")[:4].tolist() == [1.5, 2.0, -3.0, 40.0]


# --- propensities, users -----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0.0, 1.2, -0.1, np.nan])
def test_propensity_out_of_range_names_an_example(bad: float) -> None:
    frame = _log(propensity=[0.5] * 12)
    frame.loc[4, "propensity"] = bad
    with pytest.raises(CampaignLogError, match=r"1 row\(s\) outside \(0, 1\].*row 4 \(user 'u4'\)"):
        _prepare(frame, propensity_col="propensity")


def test_propensity_is_kept_aligned() -> None:
    frame = _log(propensity=np.linspace(0.1, 1.0, 12))
    frame.loc[0, "conversion"] = np.nan
    data = _quiet(frame, propensity_col="propensity")
    np.testing.assert_allclose(data.propensity, np.linspace(0.1, 1.0, 12)[1:])


def test_duplicate_users_warn_but_stay() -> None:
    frame = _log()
    frame.loc[[1, 2], "user_id"] = "u0"
    frame.loc[5, "user_id"] = "u4"
    with pytest.warns(CampaignWarning, match=r"2 user id\(s\) appear more than once \(5 rows\)"):
        data = _prepare(frame)
    assert len(data.frame) == 12


def test_unknown_users_warn_with_count_and_share() -> None:
    known = {f"u{i}" for i in range(9)}
    with pytest.warns(CampaignWarning, match=r"3 of 12 users \(25.0%\) are not in the event store"):
        data = _prepare(_log(), known_users=known)
    assert len(data.frame) == 12


def test_missing_user_ids_are_dropped() -> None:
    frame = _log()
    frame.loc[0, "user_id"] = None
    with pytest.warns(CampaignWarning, match="1 × user id missing"):
        data = _prepare(frame)
    assert data.dropped.reason.tolist() == ["user id missing"]


def test_every_row_accounted_for_on_a_generated_log(tmp_path: Path) -> None:
    log = generate_campaign(CampaignConfig(customers=3000, seed=4)).log
    log["conversion"] = log["conversion"].astype(object)
    log.loc[log.index[::97], "conversion"] = "n/a"
    log.loc[log.index[5::301], "arm"] = "email"
    path = tmp_path / "log.csv"
    log.to_csv(path, index=False)
    frame = read_campaign_log(path)
    with pytest.warns(CampaignWarning, match="see CampaignData.dropped"):
        data = prepare_campaign(
            frame,
            arm_col="arm",
            control="control",
            treatments=["push", "coupon"],
            outcomes=["visit", "conversion", "spend"],
            propensity_col="propensity",
        )
    assert len(data.frame) + len(data.dropped) == 3000
    assert (data.dropped.reason.str.startswith("arm 'email'")).sum() == 10
    # pandas reads "n/a" as missing, so those rows are dropped as missing outcomes.
    assert (data.dropped.reason == "outcome conversion missing").sum() >= 30
    assert data.arm_counts().sum() == len(data.frame)
    assert data.frame.index.intersection(data.dropped.index).empty
