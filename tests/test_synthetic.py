"""Tests of the synthetic log generator: shape, determinism, and that the truth drives the data."""

from __future__ import annotations

import dataclasses
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
from ebbtide.synthetic import SynthConfig, SyntheticLog, generate, write_taobao_csv, write_truth

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
)
def test_invariants_hold_for_any_small_config(
    users: int,
    days: float,
    categories: int,
    items: int,
    seed: int,
    dormant_share: float,
    lineage: bool,
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
