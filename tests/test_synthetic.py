"""Tests of the synthetic log generator: shape, determinism, and that the truth drives the data."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebbtide.errors import ConfigError
from ebbtide.synthetic import (
    SynthConfig,
    SyntheticLog,
    _Cycle,
    _expected_count,
    generate,
    two_scale_config,
    write_taobao_csv,
    write_truth,
)

SMALL = SynthConfig(users=300, days=3.0, categories=30, items_per_category=40, seed=7)


@pytest.fixture(scope="module")
def medium() -> SyntheticLog:
    """About 50k events with the default dormancy and behaviour mix."""
    return generate(SynthConfig(users=2000, days=5.0, categories=50, events_per_user_day=5.0))


def _np(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy()


def test_same_seed_gives_identical_events_and_csv(tmp_path: Path) -> None:
    a, b = generate(SMALL), generate(SMALL)
    assert a.events.num_rows > 1000
    assert a.events.equals(b.events)
    assert a.truth_interests.equals(b.truth_interests)
    assert a.truth_users.equals(b.truth_users)
    for suffix in (".csv", ".csv.gz"):
        pa_, pb_ = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        write_taobao_csv(a, pa_)
        write_taobao_csv(b, pb_)
        assert pa_.read_bytes() == pb_.read_bytes()


def test_different_seed_gives_different_events() -> None:
    a = generate(SMALL)
    c = generate(dataclasses.replace(SMALL, seed=8))
    assert not a.events.equals(c.events)
    assert not np.array_equal(
        _np(a.truth_categories, "decay_per_day"), _np(c.truth_categories, "decay_per_day")
    )


def test_behaviour_shares_change_marks_only() -> None:
    a = generate(SMALL)
    b = generate(dataclasses.replace(SMALL, behavior_shares=(0.5, 0.2, 0.2, 0.1)))
    assert a.events.select(["user_id", "ts"]).equals(b.events.select(["user_id", "ts"]))
    assert not a.events.column("behavior").equals(b.events.column("behavior"))


def test_behaviour_mix_matches_shares(medium: SyntheticLog) -> None:
    behavior = medium.events.column("behavior")
    n = len(behavior)
    assert 40_000 < n < 70_000
    counts = {r["values"]: r["counts"] for r in pc.value_counts(behavior).to_pylist()}
    assert set(counts) == {"pv", "cart", "fav", "buy"}
    for word, share in zip(("pv", "cart", "fav", "buy"), (0.90, 0.05, 0.03, 0.02), strict=True):
        assert counts[word] / n == pytest.approx(share, abs=0.005)


def test_rows_sorted_by_user_string_then_time(medium: SyntheticLog) -> None:
    users = medium.events.column("user_id").to_pylist()
    ts = _np(medium.events, "ts")
    keys = list(zip(users, ts.tolist(), strict=True))
    assert keys == sorted(keys)
    # Users come in string order, as in the Taobao file ("1", "10", "100", ...).
    assert medium.truth_users.column("user_id").to_pylist() == sorted(map(str, range(1, 2001)))


def test_timestamps_lie_in_window() -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    log = generate(dataclasses.replace(SMALL, start=start, days=2.5))
    ts = _np(log.events, "ts")
    lo = int(start.timestamp())
    hi = int((start + timedelta(days=2.5)).timestamp())
    assert ts.min() >= lo
    assert ts.max() < hi
    # The window is used end to end, not just its start.
    assert ts.max() > hi - 3600


def test_dormancy_is_respected(medium: SyntheticLog) -> None:
    users = medium.truth_users
    dormant = users.filter(pc.is_valid(users.column("dormant_at_ts")))
    # About half of users are given a dormancy time, ~63% of those fall in a 5-of-9-day window.
    assert 0.15 < dormant.num_rows / users.num_rows < 0.35
    last = medium.events.group_by("user_id").aggregate([("ts", "max")])
    joined = dormant.join(last, "user_id", join_type="inner")
    assert joined.num_rows > 100
    assert pc.all(pc.less(joined.column("ts_max"), joined.column("dormant_at_ts"))).as_py()


def test_dormancy_silences_users() -> None:
    """With everyone going dormant early, the second half of the window is nearly empty."""
    cfg = dataclasses.replace(SMALL, dormant_share=1.0, dormancy_mean_days=0.5, days=4.0)
    log = generate(cfg)
    rel = (_np(log.events, "ts") - int(cfg.start.timestamp())) / 86_400
    assert np.mean(rel >= 2.0) < 0.15  # about 0.5 without dormancy


def test_counts_in_truth_match_events(medium: SyntheticLog) -> None:
    ev = medium.events
    assert pc.sum(medium.truth_users.column("n_events")).as_py() == ev.num_rows
    assert pc.sum(medium.truth_interests.column("n_events")).as_py() == ev.num_rows
    assert pc.sum(medium.truth_categories.column("n_events")).as_py() == ev.num_rows
    counts = ev.group_by("user_id").aggregate([("ts", "count")]).to_pylist()
    per_user = {r["user_id"]: r["ts_count"] for r in counts}
    truth = medium.truth_users.to_pydict()
    for user, n in zip(truth["user_id"], truth["n_events"], strict=True):
        assert per_user.get(user, 0) == n
    # Every event's category is one of the user's interests.
    pairs = ev.group_by(["user_id", "category_id"]).aggregate([]).num_rows
    known = ev.select(["user_id", "category_id"]).join(
        medium.truth_interests.select(["user_id", "category_id"]),
        ["user_id", "category_id"],
        join_type="left semi",
    )
    assert known.num_rows == ev.num_rows
    assert pairs <= medium.truth_interests.num_rows


def test_items_are_globally_unique_per_category(medium: SyntheticLog) -> None:
    item_cats = medium.events.group_by(["item_id", "category_id"]).aggregate([])
    assert item_cats.num_rows == len(pc.unique(item_cats.column("item_id")))


def test_truth_tables_are_consistent(medium: SyntheticLog) -> None:
    cats = medium.truth_categories
    decay, half = _np(cats, "decay_per_day"), _np(cats, "half_life_days")
    np.testing.assert_allclose(half, math.log(2) / decay)
    assert half.min() >= 0.25 and half.max() <= 5.0
    it = medium.truth_interests
    eta = _np(it, "branching_ratio")
    assert eta.min() > 0.2 and eta.max() < 0.8
    np.testing.assert_allclose(_np(it, "excitation_per_day"), eta * _np(it, "decay_per_day"))
    by_cat = dict(zip(cats.column("category_id").to_pylist(), decay.tolist(), strict=True))
    expected = np.array([by_cat[c] for c in it.column("category_id").to_pylist()])
    np.testing.assert_allclose(_np(it, "decay_per_day"), expected)
    # μ is set so that Σ_c μ·G(η, δ, T) / T = activity (the expected count from an empty start).
    days = medium.config.days
    mu, d = _np(it, "baseline_per_day"), _np(it, "decay_per_day")
    g = days / (1 - eta) - eta / ((1 - eta) ** 2 * d) * -np.expm1(-(1 - eta) * d * days)
    per_user: dict[str, float] = {}
    for user, v in zip(it.column("user_id").to_pylist(), (mu * g / days).tolist(), strict=True):
        per_user[user] = per_user.get(user, 0.0) + v
    users = medium.truth_users.to_pydict()
    got = np.array([per_user[u] for u in users["user_id"]])
    np.testing.assert_allclose(got, users["activity_per_day"], rtol=1e-9)
    assert np.all(np.array(users["n_interests"]) >= 1)


def test_volume_hits_target_without_and_with_dormancy() -> None:
    base = SynthConfig(users=3000, days=6.0, categories=40, events_per_user_day=4.0, seed=3)
    quiet = generate(dataclasses.replace(base, dormant_share=0.0))
    assert quiet.events.num_rows / base.expected_events == pytest.approx(1.0, abs=0.06)
    assert quiet.truth_users.column("dormant_at_ts").null_count == base.users
    dormant = generate(base)
    assert dormant.events.num_rows / base.expected_events == pytest.approx(1.0, abs=0.08)


def _truncated_exponential_rate(delay: np.ndarray, room: np.ndarray) -> float:
    """MLE of δ for delays ~ Exp(δ) observed only when below ``room`` (children past the window
    are dropped). The log-likelihood Σ log δ − δ d − log(1 − e^{−δ w}) is concave in δ."""

    def score(rate: float) -> float:
        x = rate * room
        return delay.size / rate - delay.sum() - np.sum(room / np.expm1(np.minimum(x, 700.0)))

    lo, hi = 1e-3, 1e3
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if score(mid) > 0 else (lo, mid)
    return math.sqrt(lo * hi)


def test_child_delays_recover_category_decay() -> None:
    """The excitation timing is driven by δ_c: per-category MLE of the parent→child delay
    matches the true decay, across half-lives from hours to days."""
    cfg = SynthConfig(
        users=5000,
        days=9.0,
        categories=12,
        category_zipf=0.3,
        events_per_user_day=6.0,
        dormant_share=0.0,
        keep_lineage=True,
        seed=11,
    )
    log = generate(cfg)
    ev = log.events
    parent = ev.column("parent_row")
    is_child = pc.is_valid(parent).to_numpy(zero_copy_only=False)
    assert 0.2 < is_child.mean() < 0.8  # mean branching ratio 0.5 → about half are children
    ts = _np(ev, "ts")
    child = np.flatnonzero(is_child)
    par = parent.to_numpy(zero_copy_only=False)[child].astype(np.int64)
    users = ev.column("user_id").to_numpy(zero_copy_only=False)
    cats = ev.column("category_id").to_numpy(zero_copy_only=False)
    assert np.all(users[par] == users[child]) and np.all(cats[par] == cats[child])
    assert np.all(ts[par] <= ts[child])
    end = int(cfg.start.timestamp()) + round(cfg.days * 86_400)
    delay = (ts[child] - ts[par] + 0.5) / 86_400
    room = (end - ts[par]) / 86_400
    truth = dict(
        zip(
            log.truth_categories.column("category_id").to_pylist(),
            _np(log.truth_categories, "decay_per_day").tolist(),
            strict=True,
        )
    )
    fitted, true = [], []
    for cat in np.unique(cats[child]):
        sel = cats[child] == cat
        if sel.sum() < 1500:
            continue
        fitted.append(_truncated_exponential_rate(delay[sel], room[sel]))
        true.append(truth[cat])
    fitted_a, true_a = np.array(fitted), np.array(true)
    assert fitted_a.size >= 8
    assert true_a.max() / true_a.min() > 3  # half-lives really differ across categories
    # Slow decays are seen through a 9-day window only: allow 20% each, 6% on average.
    np.testing.assert_allclose(fitted_a, true_a, rtol=0.2)
    assert np.mean(np.abs(np.log(fitted_a / true_a))) < 0.06


def _hawkes_loglik(
    t: np.ndarray, pair: np.ndarray, mu: np.ndarray, eta: np.ndarray, decay: float, end: float
) -> float:
    """Exact log-likelihood of exponential-kernel Hawkes processes with α = η·δ on [0, end).

    ``t`` sorted within runs of ``pair`` (dense ids); ``mu``/``eta`` per pair. Uses
    Σ_{j<i} e^{−δ(t_i − t_j)} = e^{−δ t_i} · Σ_{j<i} e^{δ t_j} on a pairs × events matrix.
    """
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    rank = np.arange(t.size) - np.repeat(starts, np.diff(np.r_[starts, t.size]))
    grid = np.zeros((mu.size, rank.max() + 1))
    grid[pair, rank] = np.exp(decay * t)
    before = np.cumsum(grid, axis=1)[pair, rank] - grid[pair, rank]
    lam = mu[pair] + eta[pair] * decay * np.exp(-decay * t) * before
    compensator = mu.sum() * end + np.sum(eta[pair] * -np.expm1(-decay * (end - t)))
    return float(np.log(lam).sum() - compensator)


def test_event_times_alone_identify_decay() -> None:
    """Without lineage: holding μ and η at the truth, the Hawkes likelihood of the observed
    times, profiled over δ, peaks near the true δ_c of each category."""
    cfg = SynthConfig(
        users=3000,
        days=9.0,
        categories=12,
        category_zipf=0.3,
        events_per_user_day=6.0,
        dormant_share=0.0,
        seed=5,
    )
    log = generate(cfg)
    interests = log.truth_interests.append_column(
        "pair", pa.array(np.arange(log.truth_interests.num_rows))
    )
    ev = log.events.append_column("row", pa.array(np.arange(log.events.num_rows)))
    ev = ev.join(interests.select(["user_id", "category_id", "pair"]), ["user_id", "category_id"])
    ev = ev.sort_by("row")
    t = (_np(ev, "ts") - int(cfg.start.timestamp()) + 0.5) / 86_400
    cats = ev.column("category_id").to_numpy(zero_copy_only=False)
    it_cats = interests.column("category_id").to_numpy(zero_copy_only=False)
    scales = np.exp(np.linspace(math.log(0.5), math.log(2.0), 29))
    cat_truth = log.truth_categories
    top = cat_truth.filter(pc.greater_equal(cat_truth.column("n_events"), 5000))
    true_decays = _np(top, "decay_per_day")
    assert top.num_rows >= 6 and true_decays.max() / true_decays.min() > 3
    for cat, decay in zip(top.column("category_id").to_pylist(), true_decays, strict=True):
        sel, mine = cats == cat, it_cats == cat
        dense = np.full(interests.num_rows, -1)
        dense[mine] = np.arange(mine.sum())
        pair = dense[_np(ev, "pair")[sel]]
        mu, eta = _np(interests, "baseline_per_day")[mine], _np(interests, "branching_ratio")[mine]
        ll = [_hawkes_loglik(t[sel], pair, mu, eta, decay * s, cfg.days) for s in scales]
        best = scales[int(np.argmax(ll))]
        assert 0.8 < best < 1.25, (cat, decay, best)


def test_repeat_prob_controls_item_reuse() -> None:
    def reuse(p: float) -> float:
        cfg = dataclasses.replace(SMALL, repeat_prob=p, keep_lineage=True, items_per_category=500)
        ev = generate(cfg).events
        parent = ev.column("parent_row").to_numpy(zero_copy_only=False)
        child = np.flatnonzero(~np.isnan(parent))
        items = ev.column("item_id").to_numpy(zero_copy_only=False)
        return float(np.mean(items[child] == items[parent[child].astype(np.int64)]))

    assert reuse(1.0) == 1.0
    assert reuse(0.0) < 0.1
    assert reuse(0.5) == pytest.approx(0.5, abs=0.1)


def test_edge_configs_generate() -> None:
    one = generate(
        SynthConfig(
            users=1,
            categories=1,
            items_per_category=1,
            days=0.5,
            seed=2,
            events_per_user_day=50.0,
            dormant_share=0.0,
        )
    )
    assert one.truth_interests.num_rows == 1
    assert set(one.events.column("item_id").to_pylist()) <= {"1"}
    fixed = generate(
        dataclasses.replace(
            SMALL,
            half_life_days=(1.0, 1.0),
            branching_range=(0.0, 0.0),
            activity_sigma=0.0,
            item_zipf=0.0,
            interests_mean=30.0,
        )
    )
    np.testing.assert_allclose(_np(fixed.truth_categories, "half_life_days"), 1.0)
    # Users can take every category when asked for more interests than exist.
    assert max(fixed.truth_users.column("n_interests").to_pylist()) == 30


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("users", 0),
        ("users", 2.5),
        ("days", 0.0),
        ("days", float("nan")),
        ("categories", -1),
        ("items_per_category", True),
        ("seed", -3),
        ("start", datetime(2017, 11, 25)),
        ("events_per_user_day", -1.0),
        ("half_life_days", (5.0, 0.25)),
        ("half_life_days", (0.0, 1.0)),
        ("branching_range", (0.2, 1.0)),
        ("dormant_share", 1.5),
        ("repeat_prob", -0.1),
        ("behavior_shares", (0.9, 0.05, 0.03, 0.03)),
        ("behavior_shares", (0.9, 0.1)),
        ("interests_mean", 0.5),
        ("session_half_life_hours", (2.0, 0.2)),
        ("session_branching_range", (0.1, 0.5)),  # 0.8 (branching_range) + 0.5 >= 1
        ("session_branching_range", (-0.1, 0.1)),
        ("daily_amplitude", 1.0),
        ("weekly_amplitude", -0.1),
        ("peak_hour", 24.0),
        ("peak_day", 7.0),
        ("time_zone", "Mars/Olympus"),
        ("time_zone", "Asia"),
        ("time_zone", ""),
        ("fading_share", 1.5),
        ("fading_factor", 2.0),
        ("fading_window", (0.9, 0.6)),
    ],
)
def test_config_validation_names_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"SynthConfig\.{field} = .*allowed"):
        SynthConfig(**{field: value})


def test_unknown_config_field_is_an_error() -> None:
    with pytest.raises(TypeError):
        SynthConfig(userz=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", ["log.csv", "sub/log.csv.gz"])
def test_taobao_csv_roundtrip(tmp_path: Path, name: str) -> None:
    log = generate(dataclasses.replace(SMALL, keep_lineage=True))
    path = tmp_path / name
    rows = write_taobao_csv(log, path)
    assert rows == log.events.num_rows
    raw = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        convert_options=pacsv.ConvertOptions(
            column_types={f"f{i}": pa.string() for i in range(4)} | {"f4": pa.int64()}
        ),
    )
    assert raw.num_columns == 5  # no lineage column in the Taobao file
    assert raw.num_rows == rows
    expected = log.events.select(["user_id", "item_id", "category_id", "behavior", "ts"])
    raw = raw.rename_columns(expected.column_names)
    assert raw.equals(expected.cast(raw.schema).combine_chunks())
    if name.endswith(".csv"):
        first = path.read_text().splitlines()[0]
        assert '"' not in first and first.count(",") == 4
        assert first.split(",")[0] == "1"  # data, not a header
        con = duckdb.connect()
        n = con.execute("SELECT count(*) FROM read_csv(?, header = false)", [str(path)]).fetchone()
        cur = con.execute("SELECT * FROM read_csv(?, header = false) LIMIT 1", [str(path)])
        assert (n[0], len(cur.description)) == (rows, 5)


def test_write_truth(tmp_path: Path) -> None:
    log = generate(SMALL)
    paths = write_truth(log, tmp_path / "truth")
    assert [p.name for p in paths] == [
        "categories.parquet",
        "interests.parquet",
        "users.parquet",
        "README.txt",
    ]
    assert pq.read_table(paths[0]).equals(log.truth_categories)
    assert pq.read_table(paths[1]).equals(log.truth_interests)
    assert pq.read_table(paths[2]).equals(log.truth_users)
    readme = paths[3].read_text()
    assert "half_life_days" in readme and "dormant_at_ts" in readme and "seed=7" in readme


def test_progress_reports_every_block() -> None:
    calls: list[tuple[int, int]] = []
    generate(
        dataclasses.replace(SMALL, users=9000, events_per_user_day=0.5),
        progress=lambda *a: calls.append(a),
    )
    assert calls == [(8192, 9000), (9000, 9000)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=st.integers(1, 60),
    days=st.floats(0.01, 4.0),
    categories=st.integers(1, 8),
    items=st.integers(1, 30),
    seed=st.integers(0, 2**32),
    dormant_share=st.sampled_from([0.0, 0.5, 1.0]),
    lineage=st.booleans(),
    session=st.booleans(),
    cycle=st.sampled_from([0.0, 0.5, 0.99]),
    fading=st.sampled_from([0.0, 1.0]),
)
def test_invariants_hold_for_any_small_config(
    users: int,
    days: float,
    categories: int,
    items: int,
    seed: int,
    dormant_share: float,
    lineage: bool,
    session: bool,
    cycle: float,
    fading: float,
) -> None:
    cfg = SynthConfig(
        users=users,
        days=days,
        categories=categories,
        items_per_category=items,
        seed=seed,
        dormant_share=dormant_share,
        dormancy_mean_days=1.0,
        events_per_user_day=20.0,
        keep_lineage=lineage,
        branching_range=(0.2, 0.5),
        session_branching_range=(0.2, 0.4) if session else (0.0, 0.0),
        daily_amplitude=cycle,
        weekly_amplitude=cycle / 2,
        fading_share=fading,
    )
    log = generate(cfg)
    ev = log.events
    start = int(cfg.start.timestamp())
    ts = _np(ev, "ts")
    assert np.all((ts >= start) & (ts < start + days * 86_400))
    keys = list(zip(ev.column("user_id").to_pylist(), ts.tolist(), strict=True))
    assert keys == sorted(keys)
    truth = log.truth_users.to_pydict()
    assert len(truth["user_id"]) == users
    assert sum(truth["n_events"]) == ev.num_rows
    quiet = dict(zip(truth["user_id"], truth["dormant_at_ts"], strict=True))
    assert all(quiet[user] is None or t < quiet[user] for user, t in keys)
    if lineage:
        for row, p in enumerate(ev.column("parent_row").to_pylist()):
            # A parent precedes its child in the rows, for the same user, at or before its time.
            assert p is None or (
                p < row and keys[p][0] == keys[row][0] and keys[p][1] <= keys[row][1]
            )


# --- two time scales, the daily/weekly cycle, fading ---------------------------------------


def test_default_events_are_frozen(tmp_path: Path) -> None:
    """Features added later are off by default: the default log is byte for byte the one
    written before they existed (benches and recorded results rely on it)."""
    path = tmp_path / "small.csv"
    write_taobao_csv(generate(SMALL), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "1155833c2903edf7686a7b4ae5e4be1ca901256971116d327499670fc0bfb850"
    log = generate(SMALL)
    assert log.truth_cycle is None
    assert "session_decay_per_day" not in log.truth_categories.column_names
    assert "session_branching_ratio" not in log.truth_interests.column_names
    assert "fading" not in log.truth_users.column_names


def test_new_features_leave_categories_and_users_in_place() -> None:
    on = generate(
        dataclasses.replace(
            SMALL, session_branching_range=(0.1, 0.1), daily_amplitude=0.5, fading_share=0.5
        )
    )
    off = generate(SMALL)
    for name in ("category_id", "decay_per_day", "popularity", "n_items"):
        assert on.truth_categories.column(name).equals(off.truth_categories.column(name))
    for name in ("user_id", "activity_per_day", "dormant_at_ts", "n_interests"):
        assert on.truth_users.column(name).equals(off.truth_users.column(name))
    assert on.truth_interests.column("branching_ratio").equals(
        off.truth_interests.column("branching_ratio")
    )
    assert not on.events.equals(off.events)


def _mean_count_by_ode(eta: float, d: float, eta_s: float, d_s: float, t: float) -> float:
    """E N[0, t) / μ by RK4 on m = 1 + x + y, x' = ηδ m − δ x, y' = η_s δ_s m − δ_s y."""

    def f(state: np.ndarray) -> np.ndarray:
        x, y, _ = state
        m = 1.0 + x + y
        return np.array([eta * d * m - d * x, eta_s * d_s * m - d_s * y, m])

    n = 10_000
    h = t / n
    state = np.zeros(3)
    for _ in range(n):
        k1 = f(state)
        k2 = f(state + h / 2 * k1)
        k3 = f(state + h / 2 * k2)
        k4 = f(state + h * k3)
        state = state + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return float(state[2])


@pytest.mark.parametrize(
    "params",
    [
        (0.4, 0.3, 0.35, 20.0, 20.0),
        (0.5, 0.07, 0.4, 8.3, 20.0),
        (0.0, 1.0, 0.3, 1.0 / 0.7, 9.0),  # a double root: the divided difference is h'
        (0.6, 0.05, 0.38, 50.0, 3.0),
    ],
)
def test_two_kernel_expected_count_is_exact(params: tuple[float, ...]) -> None:
    eta, d, eta_s, d_s, t = params
    got = _expected_count(*(np.array([v]) for v in params[:4]), t)[0]
    assert got == pytest.approx(_mean_count_by_ode(eta, d, eta_s, d_s, t), rel=1e-6)
    # Without the session kernel it is the one-kernel G of the module docstring.
    one = _expected_count(np.array([eta]), np.array([d]), np.zeros(1), np.array([d_s]), t)[0]
    x = (1 - eta) * d * t
    assert one == pytest.approx(t / (1 - eta) - eta / ((1 - eta) ** 2 * d) * -math.expm1(-x))


@pytest.mark.parametrize("cycle", [False, True])
def test_two_kernel_volume_matches_target(cycle: bool) -> None:
    overrides = {} if cycle else {"daily_amplitude": 0.0, "weekly_amplitude": 0.0}
    cfg = two_scale_config(users=1500, seed=4, **overrides)
    log = generate(cfg)
    assert (log.truth_cycle is not None) == cycle
    # Exact expectation given the drawn activities; the cluster noise is about 0.6%.
    target = _np(log.truth_users, "activity_per_day").sum() * cfg.days
    assert log.events.num_rows / target == pytest.approx(1.0, abs=0.03)
    # ... and the config's nominal volume, with the noise of 1,500 lognormal activities.
    assert log.events.num_rows / cfg.expected_events == pytest.approx(1.0, abs=0.08)


def test_session_and_interest_children_have_their_own_delays() -> None:
    cfg = SynthConfig(
        users=2000,
        days=10.0,
        categories=10,
        category_zipf=0.3,
        events_per_user_day=5.0,
        dormant_share=0.0,
        half_life_days=(0.05, 0.3),
        branching_range=(0.3, 0.4),
        session_half_life_hours=(0.2, 2.0),
        session_branching_range=(0.3, 0.4),
        keep_lineage=True,
        seed=12,
    )
    log = generate(cfg)
    ev = log.events
    parent = ev.column("parent_row")
    kernel = ev.column("kernel")
    assert parent.null_count == kernel.null_count
    assert pc.all(pc.equal(pc.is_valid(parent), pc.is_valid(kernel))).as_py()
    child = np.flatnonzero(pc.is_valid(parent).to_numpy(zero_copy_only=False))
    par = parent.to_numpy(zero_copy_only=False)[child].astype(np.int64)
    which = kernel.to_numpy(zero_copy_only=False)[child].astype(np.int64)
    ts = _np(ev, "ts")
    delay = (ts[child] - ts[par]) / 86_400
    cats = ev.column("category_id").to_numpy(zero_copy_only=False)[child]
    truth = log.truth_categories.to_pydict()
    index = {c: i for i, c in enumerate(truth["category_id"])}
    cat_row = np.array([index[c] for c in cats])
    mean_delay = {
        0: np.array(truth["half_life_days"])[cat_row] / math.log(2),
        1: np.array(truth["session_half_life_days"])[cat_row] / math.log(2),
    }
    # Parents far from the end: a child past the window (dropped) has odds below 2^-15.
    end = int(cfg.start.timestamp()) + round(cfg.days * 86_400)
    room = (end - ts[par]) / 86_400
    for k, longest in ((0, 0.3), (1, 2.0 / 24.0)):
        sel = (which == k) & (room > 15 * longest)
        assert sel.sum() > 10_000
        ratio = delay[sel].mean() / mean_delay[k][sel].mean()
        assert ratio == pytest.approx(1.0, abs=0.04), (k, ratio)
    # The two scales really are apart: sessions last hours, interests days.
    assert np.median(delay[which == 1]) < 0.1 < np.median(delay[which == 0])


def test_cycle_time_change_is_exact() -> None:
    cfg = two_scale_config(days=30.0)
    cycle = _Cycle(cfg)
    week = (np.arange(7 * 24 * 600) + 0.5) / (24 * 600)
    assert cycle.g(week).mean() == pytest.approx(1.0, abs=1e-9)
    assert cycle.norm == pytest.approx(1.0, abs=1e-12)
    t = np.linspace(0.0, cfg.days, 100_001)
    phi = cycle.phi(t)
    assert np.all(np.diff(phi) > 0)
    # Φ(7 days) = 7: g averages 1 over a whole week.
    assert cycle.phi(np.array([7.0]))[0] == pytest.approx(7.0, abs=1e-9)
    # Φ is the integral of g (trapezoid on a 26-second grid) ...
    area = np.concatenate([[0.0], np.cumsum(np.diff(t) * (cycle.g(t[1:]) + cycle.g(t[:-1])) / 2)])
    np.testing.assert_allclose(phi, area, atol=1e-6)
    # ... and Φ⁻¹ inverts it to well under a second.
    np.testing.assert_allclose(cycle.phi_inv(phi), t, atol=1e-8)


def _first_harmonic(hours: np.ndarray, period: float) -> tuple[float, float]:
    """Amplitude A and peak of a density ∝ 1 + A cos(2π(x − peak)/period)."""
    z = np.mean(np.exp(2j * np.pi * hours / period))
    return 2 * abs(z), float(np.angle(z) * period / (2 * np.pi)) % period


@pytest.mark.parametrize(
    ("zone", "offset", "start"),
    [
        ("Asia/Shanghai", 8.0, datetime(2017, 11, 24, 16, 0, tzinfo=UTC)),
        # November: New York is on standard time (UTC-5) for the whole window.
        ("America/New_York", -5.0, datetime(2021, 11, 8, 5, 0, tzinfo=UTC)),
    ],
)
def test_hour_of_day_follows_the_daily_cycle(zone: str, offset: float, start: datetime) -> None:
    cfg = two_scale_config(users=400, time_zone=zone, start=start, peak_hour=21.0)
    log = generate(cfg)
    cycle = log.truth_cycle
    assert cycle is not None and cycle.num_rows == 1
    row = cycle.to_pylist()[0]
    assert (row["time_zone"], row["utc_offset_hours"]) == (zone, offset)
    assert (row["daily_amplitude"], row["peak_hour"]) == (0.6, 21.0)
    assert (row["weekly_amplitude"], row["peak_day"]) == (0.2, 6.0)
    ts = _np(log.events, "ts")
    local_hour = ((ts + round(offset * 3600)) % 86_400) / 3600  # no machine time zone involved
    amplitude, peak = _first_harmonic(local_hour, 24.0)
    assert amplitude == pytest.approx(0.6, rel=0.15)
    assert abs((peak - 21.0 + 12) % 24 - 12) < 1.0
    flat = generate(dataclasses.replace(cfg, daily_amplitude=0.0, weekly_amplitude=0.0))
    flat_hour = ((_np(flat.events, "ts") + round(offset * 3600)) % 86_400) / 3600
    assert _first_harmonic(flat_hour, 24.0)[0] < 0.1
    assert flat.truth_cycle is None


def test_fading_users_fall_to_the_thinned_rate() -> None:
    """After F_u a fading pair is a Hawkes process with μ and both η scaled by f, so its settled
    rate is f·μ/(1 − f·η) against μ/(1 − η) before (a ratio of f only when η = 0)."""
    cfg = SynthConfig(
        users=3000,
        days=20.0,
        categories=20,
        events_per_user_day=5.0,
        dormant_share=0.0,
        half_life_days=(0.05, 0.2),
        branching_range=(0.2, 0.4),
        session_branching_range=(0.1, 0.2),
        fading_share=0.5,
        fading_window=(0.4, 0.6),
        fading_factor=0.2,
        seed=9,
    )
    log = generate(cfg)
    users = log.truth_users.to_pydict()
    fading = np.array(users["fading"])
    fades_at = np.array(users["fades_at_days"])
    assert 0.45 < fading.mean() < 0.55
    assert np.all(np.isnan(fades_at[~fading]))
    assert np.all((fades_at[fading] >= 8.0) & (fades_at[fading] <= 12.0))
    f_by_user = dict(zip(users["user_id"], fades_at.tolist(), strict=True))

    it = log.truth_interests.to_pydict()
    f = cfg.fading_factor
    eta = np.array(it["branching_ratio"]) + np.array(it["session_branching_ratio"])
    mu = np.array(it["baseline_per_day"])
    pair_fade = np.array([f_by_user[u] for u in it["user_id"]])
    fades = ~np.isnan(pair_fade)
    # Windows well past the ramp-up (about 4 relaxation times) and past F_u's transient.
    before, after_gap = 5.0, 2.0
    expect_before = np.sum(mu[fades] / (1 - eta[fades])) * before
    after_len = cfg.days - pair_fade[fades] - after_gap
    expect_after = np.sum(f * mu[fades] / (1 - f * eta[fades]) * after_len)

    ev = log.events
    t = (_np(ev, "ts") - int(cfg.start.timestamp())) / 86_400
    ev_fade = np.array([f_by_user[u] for u in ev.column("user_id").to_pylist()])
    n_before = np.sum((t >= ev_fade - before) & (t < ev_fade))
    n_after = np.sum(t >= ev_fade + after_gap)
    assert n_before / expect_before == pytest.approx(1.0, abs=0.06)
    assert n_after / expect_after == pytest.approx(1.0, abs=0.08)
    # The aggregate rate ratio: well below 1, near f (here f·(1 − η)/(1 − f·η) ≈ 0.15).
    rate_ratio = (n_after / after_len.sum()) / (n_before / (before * fades.sum()))
    predicted = (expect_after / after_len.sum()) / (expect_before / (before * fades.sum()))
    assert 0.1 < predicted < f
    assert rate_ratio == pytest.approx(predicted, rel=0.1)
    # Users who do not fade keep their full volume.
    quiet = ~fading
    n_quiet = np.sum(np.isnan(ev_fade))
    target = np.array(users["activity_per_day"])[quiet].sum() * cfg.days
    assert n_quiet / target == pytest.approx(1.0, abs=0.04)


def test_two_scale_preset_and_overrides() -> None:
    cfg = two_scale_config()
    assert (cfg.users, cfg.seed, cfg.days, cfg.categories) == (1000, 2, 20.0, 30)
    assert cfg.events_per_user_day == 10.0 and cfg.dormant_share == 0.0
    assert cfg.half_life_days == (1.0, 10.0) and cfg.branching_range == (0.3, 0.5)
    assert cfg.session_half_life_hours == (0.2, 2.0)
    assert cfg.session_branching_range == (0.3, 0.4)
    assert (cfg.daily_amplitude, cfg.peak_hour, cfg.weekly_amplitude) == (0.6, 21.0, 0.2)
    assert cfg.time_zone == "Asia/Shanghai"
    assert two_scale_config(users=10, fading_share=0.2).fading_share == 0.2
    with pytest.raises(ConfigError, match="session_branching_range"):
        two_scale_config(branching_range=(0.3, 0.7))
    with pytest.raises(TypeError):
        two_scale_config(no_such_field=1)


def test_write_truth_with_every_feature(tmp_path: Path) -> None:
    log = generate(
        dataclasses.replace(
            SMALL,
            session_branching_range=(0.1, 0.15),
            daily_amplitude=0.3,
            fading_share=0.3,
        )
    )
    paths = write_truth(log, tmp_path / "truth")
    assert [p.name for p in paths] == [
        "categories.parquet",
        "interests.parquet",
        "users.parquet",
        "cycle.parquet",
        "README.txt",
    ]
    assert log.truth_cycle is not None and pq.read_table(paths[3]).equals(log.truth_cycle)
    cats = pq.read_table(paths[0])
    assert {"session_decay_per_day", "session_half_life_days"} <= set(cats.column_names)
    hours = _np(cats, "session_half_life_days") * 24
    assert hours.min() > 0.2 - 1e-9 and hours.max() < 2.0 + 1e-9
    interests = pq.read_table(paths[1])
    assert {
        "session_excitation_per_day",
        "session_decay_per_day",
        "session_half_life_days",
        "session_branching_ratio",
    } <= set(interests.column_names)
    users = pq.read_table(paths[2])
    assert users.schema.field("fading").type == pa.bool_()
    assert users.schema.field("fades_at_days").type == pa.float64()
    readme = paths[4].read_text()
    assert "cycle.parquet" in readme and "session_branching_ratio" in readme
