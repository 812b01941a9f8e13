"""Synthetic e-commerce behaviour logs with known ground truth.

Why: decay models must be shown to recover parameters that are *known*, and the pipeline must be
run at tens of millions of events; no real log offers either. This module writes Taobao-shaped
logs (``user,item,category,behavior,ts``) whose interest dynamics are a documented point process,
and hands back the true parameters next to the events.

Generative process
------------------
Time ``t`` is in days since ``start``; the window is ``[0, T)``, ``T = days``.

1. **Categories** ``c = 0..C-1`` have Zipf popularity ``p_c ∝ (c + 1)^-category_zipf``, a decay
   rate ``δ_c = ln 2 / h_c`` with half-life ``h_c`` log-uniform on ``half_life_days``, and ``n_c``
   items (lognormal around ``items_per_category``) with Zipf popularity ``∝ rank^-item_zipf``.
2. **Users**: activity ``a_u = A·exp(σZ − σ²/2)`` (lognormal, mean ``A``, ``σ = activity_sigma``);
   ``K_u = min(C, 1 + Poisson(interests_mean − 1))`` distinct interest categories drawn by
   popularity without replacement; weights ``w_u ~ Dirichlet(interest_concentration)``.
3. **Interests**: each pair ``(u, c)`` is a Hawkes process with exponential kernel, started
   empty at ``t = 0`` (no history before the window, so the window's own likelihood is exact)::

       λ_uc(t) = μ_uc + Σ_{j: t_j < t} α_uc · exp(−δ_c (t − t_j)),   α_uc = η_uc · δ_c,

   with branching ratio ``η_uc ~ U(branching_range)``. ``μ_uc`` is solved from
   ``E N_uc[0, T) = μ_uc · G = a_u · w_uc · T`` where
   ``G = T/(1 − η) − η/((1 − η)² δ) · (1 − exp(−(1 − η) δ T))``; so ``a_u`` is the user's expected
   events per day over the window, had the user never gone dormant.
4. **Dormancy**: with probability ``dormant_share`` user ``u`` goes quiet at
   ``D_u ~ Exp(mean dormancy_mean_days)``; events at ``t ≥ D_u`` are removed.
   ``A = events_per_user_day / ρ``, ``ρ = E[min(D, T)] / T``, so that the realised volume is about
   ``users · days · events_per_user_day`` (a few per cent less: rates ramp up from the empty start,
   so dormancy removes slightly more than its share of time).
5. **Simulation** (branching representation, vectorised one generation at a time): immigrants
   ``~ Poisson(μ_uc · min(T, D_u))`` uniform on ``[0, min(T, D_u))``; every event spawns
   ``Poisson(η_uc)`` children at delays ``~ Exp(rate δ_c)``; children at or past ``min(T, D_u)``
   are dropped; repeat until a generation is empty. Clusters are finite because ``η < 1``.
6. **Marks**: a child re-uses its parent's item with probability ``repeat_prob`` (repeat
   consumption), otherwise it draws an item of its category by popularity; immigrants always draw.
   Behaviours are i.i.d. with ``behavior_shares`` (view, cart, fav, buy), written as the Taobao
   words ``pv``, ``cart``, ``fav``, ``buy``.
7. **Output**: times are floored to integer epoch seconds; rows are sorted by ``user_id`` in
   *string* order (as in the Taobao file: "1", "10", "100", ...) and then by time.

Randomness comes only from ``np.random.default_rng`` streams spawned from ``seed``: one for the
categories and, per block of users, separate streams for users, timing and marks, so the same
seed gives byte-identical output, and changing, say, ``behavior_shares`` leaves times unchanged.

Examples
--------
>>> log = generate(SynthConfig(users=50, days=2.0, categories=10, seed=1))
>>> log.events.column_names
['user_id', 'item_id', 'category_id', 'behavior', 'ts']
"""

from __future__ import annotations

import gzip
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ebbtide.errors import ConfigError
from ebbtide.schema import BEHAVIORS, Behavior

__all__ = [
    "TAOBAO_BEHAVIOR_WORDS",
    "SynthConfig",
    "SyntheticLog",
    "generate",
    "order_log_config",
    "write_order_csv",
    "write_taobao_csv",
    "write_truth",
]

logger = logging.getLogger(__name__)

#: The word the Taobao UserBehavior file uses for each canonical behaviour.
TAOBAO_BEHAVIOR_WORDS: dict[Behavior, str] = {
    Behavior.VIEW: "pv",
    Behavior.CART: "cart",
    Behavior.FAV: "fav",
    Behavior.BUY: "buy",
}

_SECONDS_PER_DAY = 86_400
#: Users simulated together; a fixed constant so that a seed always means the same output.
_BLOCK_USERS = 8192
_TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior", "ts")
_MAX_DAYS = 36_500.0  # keeps (user rank << 32 | second) inside int64
_MAX_ITEMS = 2**31 - 1

#: 2017-11-25 00:00 in China (UTC+8): the first instant of the Taobao UserBehavior window.
TAOBAO_START = datetime(2017, 11, 24, 16, 0, tzinfo=UTC)


def _fail(name: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(
        f"SynthConfig.{name} = {value!r} is out of range; allowed: {allowed}. "
        f"Pass a value in that range."
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SynthConfig:
    """Everything that shapes a synthetic log; the defaults mimic the Taobao UserBehavior file.

    The defaults give about 100 events per user over 9 days (the real file's mean is 104), so
    ``users=100_000`` yields about 10 M events.

    Parameters
    ----------
    users : int
        Number of users; ids are ``"1" .. str(users)``.
    days : float
        Window length ``T`` in days.
    categories : int
        Number of categories ``C``.
    items_per_category : int
        Mean number of items per category (lognormal spread ``items_sigma``, at least 1).
    seed : int
        Seed of every random stream; same seed, same bytes.
    start : datetime
        Timezone-aware first instant of the window (default 2017-11-25 00:00 China time).
    events_per_user_day : float
        Target realised events per user per day, dormancy included; scales every ``μ``.
        Expected total: ``users · days · events_per_user_day``.
    activity_sigma : float
        Log-scale spread of user activity (0.7 matches Taobao's mean/median ratio of 1.33).
    interests_mean : float
        Mean number of interest categories per user (``1 + Poisson(interests_mean − 1)``).
    interest_concentration : float
        Dirichlet concentration splitting a user's activity over interests (small = peaked).
    category_zipf, item_zipf : float
        Zipf exponents of category and item popularity (0 = uniform).
    items_sigma : float
        Log-scale spread of the number of items per category.
    half_life_days : tuple[float, float]
        Range of the category half-lives ``ln 2 / δ_c`` (log-uniform), in days.
    branching_range : tuple[float, float]
        Range of the branching ratio ``η = α/δ`` (uniform); below 1 keeps clusters finite.
    dormant_share : float
        Share of users given a dormancy time; the others never go quiet.
    dormancy_mean_days : float
        Mean of the exponential dormancy time, in days from ``start``.
    repeat_prob : float
        Probability that a child event re-uses its parent's item.
    behavior_shares : tuple[float, float, float, float]
        Shares of view, cart, fav, buy; must sum to 1.
    keep_lineage : bool
        Add a ``parent_row`` column (row index of the event that triggered it, null for
        immigrants); for tests of the excitation kernel.
    basket_size_mean : float
        Rows per event: each simulated event is written as ``1 + Poisson(basket − 1)``
        rows at the same second (an order's lines), the extra rows drawing items of the
        same category with the same behaviour. The process and its truth are unchanged:
        a basket is one occurrence. 1 (the default) writes one row per event.
    """

    users: int = 1000
    days: float = 9.0
    categories: int = 300
    items_per_category: int = 200
    seed: int = 0
    start: datetime = TAOBAO_START
    events_per_user_day: float = 100.0 / 9.0
    activity_sigma: float = 0.7
    interests_mean: float = 4.0
    interest_concentration: float = 1.0
    category_zipf: float = 1.0
    item_zipf: float = 1.0
    items_sigma: float = 0.5
    half_life_days: tuple[float, float] = (0.25, 5.0)
    branching_range: tuple[float, float] = (0.2, 0.8)
    dormant_share: float = 0.5
    dormancy_mean_days: float = 9.0
    repeat_prob: float = 0.3
    behavior_shares: tuple[float, float, float, float] = (0.90, 0.05, 0.03, 0.02)
    keep_lineage: bool = False
    basket_size_mean: float = 1.0

    def __post_init__(self) -> None:
        """Check every field, naming the field, the value and the allowed range."""
        for name in ("users", "categories", "items_per_category"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= 2**31 - 1:
                raise _fail(name, value, "an integer in [1, 2**31 - 1]")
        if not _is_int(self.seed) or self.seed < 0:
            raise _fail("seed", self.seed, "an integer >= 0")
        if self.categories * self.items_per_category > _MAX_ITEMS:
            raise _fail(
                "items_per_category",
                self.items_per_category,
                f"categories * items_per_category <= {_MAX_ITEMS}",
            )
        _check_real("days", self.days, 0.0, _MAX_DAYS, low_open=True)
        if not isinstance(self.start, datetime) or self.start.utcoffset() is None:
            raise _fail("start", self.start, "a timezone-aware datetime, e.g. tzinfo=UTC")
        _check_real("events_per_user_day", self.events_per_user_day, 0.0, 1e6, low_open=True)
        _check_real("activity_sigma", self.activity_sigma, 0.0, 5.0)
        _check_real("interests_mean", self.interests_mean, 1.0, 1e4)
        _check_real("interest_concentration", self.interest_concentration, 0.01, 1e4)
        _check_real("category_zipf", self.category_zipf, 0.0, 5.0)
        _check_real("item_zipf", self.item_zipf, 0.0, 5.0)
        _check_real("items_sigma", self.items_sigma, 0.0, 3.0)
        _check_range("half_life_days", self.half_life_days, 1e-4, 1e4, low_open=False)
        _check_range("branching_range", self.branching_range, 0.0, 0.99, low_open=False)
        _check_real("dormant_share", self.dormant_share, 0.0, 1.0)
        _check_real("dormancy_mean_days", self.dormancy_mean_days, 0.0, 1e6, low_open=True)
        _check_real("repeat_prob", self.repeat_prob, 0.0, 1.0)
        shares = self.behavior_shares
        if (
            not isinstance(shares, tuple)
            or len(shares) != len(BEHAVIORS)
            or not all(_is_real(s) and s >= 0.0 for s in shares)
            or not math.isclose(sum(shares), 1.0, abs_tol=1e-9)
        ):
            raise _fail(
                "behavior_shares", shares, "4 shares >= 0 (view, cart, fav, buy) summing to 1"
            )
        if not isinstance(self.keep_lineage, bool):
            raise _fail("keep_lineage", self.keep_lineage, "True or False")
        _check_real("basket_size_mean", self.basket_size_mean, 1.0, 1e3)
        if self.keep_lineage and self.basket_size_mean > 1:
            raise _fail("keep_lineage", True, "False when basket_size_mean > 1")

    @property
    def expected_events(self) -> float:
        """Target volume ``users · days · events_per_user_day`` (realised is a few % lower)."""
        return self.users * self.days * self.events_per_user_day


def recovery_config(users: int = 1000, seed: int = 1) -> SynthConfig:
    """The log the half-life recovery bar is measured on (tests and bench share it).

    Dense (user, category) pairs, about 50 events each, keep the bias of per-pair baselines
    small; nobody goes dormant, so the decay is all there is to recover.
    """
    return SynthConfig(
        users=users,
        days=20.0,
        categories=30,
        events_per_user_day=10.0,
        dormant_share=0.0,
        seed=seed,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_real(
    name: str, value: object, low: float, high: float, *, low_open: bool = False
) -> None:
    ok = _is_real(value) and math.isfinite(value) and value <= high  # type: ignore[arg-type]
    ok = ok and (value > low if low_open else value >= low)  # type: ignore[operator]
    if not ok:
        bracket = "(" if low_open else "["
        raise _fail(name, value, f"a number in {bracket}{low:g}, {high:g}]")


def _check_range(name: str, value: object, low: float, high: float, *, low_open: bool) -> None:
    allowed = f"a (low, high) tuple with {low:g} <= low <= high <= {high:g}"
    if not isinstance(value, tuple) or len(value) != 2:
        raise _fail(name, value, allowed)
    lo, hi = value
    if not (_is_real(lo) and _is_real(hi) and low <= lo <= hi <= high):
        raise _fail(name, value, allowed)


@dataclass(frozen=True)
class SyntheticLog:
    """A synthetic event log and the true parameters that produced it.

    Attributes
    ----------
    events : pyarrow.Table
        ``user_id``, ``item_id``, ``category_id`` (strings), ``behavior`` (``pv|cart|fav|buy``),
        ``ts`` (int64 epoch seconds); sorted by ``user_id`` (string order) then ``ts``.
        With ``keep_lineage`` also ``parent_row`` (int64 row of the triggering event, or null).
    truth_categories : pyarrow.Table
        ``category_id``, ``decay_per_day`` (δ), ``half_life_days``, ``popularity``, ``n_items``,
        ``n_events``.
    truth_interests : pyarrow.Table
        ``user_id``, ``category_id``, ``baseline_per_day`` (μ), ``excitation_per_day`` (α),
        ``decay_per_day`` (δ), ``half_life_days``, ``branching_ratio`` (η), ``n_events``.
    truth_users : pyarrow.Table
        ``user_id``, ``activity_per_day`` (a), ``dormant_at_ts`` (int64 epoch s, null = not
        within the window; every event has ``ts < dormant_at_ts``), ``n_interests``, ``n_events``.
    config : SynthConfig
        The config that generated it.
    """

    events: pa.Table
    truth_categories: pa.Table
    truth_interests: pa.Table
    truth_users: pa.Table
    config: SynthConfig = field(default_factory=SynthConfig)


@dataclass(frozen=True, slots=True)
class _Catalog:
    """Category-level truth and the item catalogue."""

    cdf: np.ndarray  # cumulative category popularity
    popularity: np.ndarray
    decay: np.ndarray  # δ_c per day
    n_items: np.ndarray  # int64
    item_offset: np.ndarray  # int64, first global item index of each category
    zipf_term: np.ndarray  # per-category constant of the item rank inverse CDF
    category_ids: pa.Array  # string per category
    item_ids: pa.Array  # string per global item index


def generate(
    config: SynthConfig, *, progress: Callable[[int, int], None] | None = None
) -> SyntheticLog:
    """Simulate a log with known interest dynamics (see the module docstring for the process).

    Parameters
    ----------
    config : SynthConfig
        What to simulate; ``config.seed`` fixes every random draw.
    progress : callable, optional
        Called as ``progress(users_done, users_total)`` after each block of users, so a caller
        (the CLI) can draw a bar; the library itself never prints.

    Returns
    -------
    SyntheticLog
        Events sorted by user (string order) then time, and the truth tables.

    Examples
    --------
    >>> log = generate(SynthConfig(users=20, days=1.0, categories=5, seed=3))
    >>> log.truth_users.num_rows
    20
    """
    cfg = config
    root = np.random.SeedSequence(cfg.seed)
    ss_catalog, ss_blocks = root.spawn(2)
    catalog = _make_catalog(cfg, np.random.default_rng(ss_catalog))

    # User ids in string order, as rows of the Taobao file are; user index i <-> ids[i].
    numeric_ids = pa.array(np.arange(1, cfg.users + 1, dtype=np.int64)).cast(pa.string())
    user_ids = numeric_ids.take(pc.sort_indices(numeric_ids))

    window_sec = math.ceil(cfg.days * _SECONDS_PER_DAY)
    start_epoch = _epoch_seconds(cfg.start)
    n_blocks = -(-cfg.users // _BLOCK_USERS)
    block_seeds = ss_blocks.spawn(n_blocks)

    batches: list[pa.RecordBatch] = []
    users_parts: list[dict[str, np.ndarray]] = []
    pairs_parts: list[dict[str, np.ndarray]] = []
    category_events = np.zeros(cfg.categories, dtype=np.int64)
    rows_before = 0
    for b in range(n_blocks):
        lo, hi = b * _BLOCK_USERS, min(cfg.users, (b + 1) * _BLOCK_USERS)
        n_users = hi - lo
        ss_users, ss_sim, ss_marks = block_seeds[b].spawn(3)
        rng_users = np.random.default_rng(ss_users)
        users, pairs = _draw_users(cfg, catalog, n_users, window_sec, rng_users)
        ev = _simulate(
            cfg,
            catalog,
            users,
            pairs,
            np.random.default_rng(ss_sim),
            np.random.default_rng(ss_marks),
        )
        pairs["n_events"] = np.bincount(ev["pair"], minlength=pairs["user"].size)
        per_user = np.bincount(pairs["user"], pairs["n_events"], minlength=n_users)
        users["n_events"] = per_user.astype(np.int64)
        np.add.at(category_events, pairs["cat"], pairs["n_events"])
        users["global"] = np.arange(lo, hi, dtype=np.int64)
        pairs["user_global"] = pairs["user"] + lo
        batches.append(
            _events_batch(cfg, catalog, user_ids, users, pairs, ev, start_epoch, rows_before)
        )
        rows_before += ev["pair"].size
        users_parts.append(users)
        pairs_parts.append(pairs)
        if progress is not None:
            progress(hi, cfg.users)

    events = pa.Table.from_batches(batches, schema=_events_schema(cfg))
    logger.debug("generated %d events for %d users", events.num_rows, cfg.users)
    return SyntheticLog(
        events=events,
        truth_categories=_categories_table(catalog, category_events),
        truth_interests=_interests_table(catalog, user_ids, pairs_parts),
        truth_users=_users_table(user_ids, users_parts, start_epoch),
        config=cfg,
    )


def _epoch_seconds(instant: datetime) -> int:
    return math.floor(instant.timestamp())


def _make_catalog(cfg: SynthConfig, rng: np.random.Generator) -> _Catalog:
    """Draw category popularity, decay rates and item counts; assign shuffled global ids."""
    n_cat = cfg.categories
    weights = np.arange(1, n_cat + 1, dtype=np.float64) ** -cfg.category_zipf
    popularity = weights / weights.sum()
    cdf = np.cumsum(popularity)
    cdf[-1] = 1.0
    lo, hi = (math.log(h) for h in cfg.half_life_days)
    half_life = np.exp(rng.uniform(lo, hi, n_cat)) if hi > lo else np.full(n_cat, math.exp(lo))
    decay = math.log(2.0) / half_life
    sigma = cfg.items_sigma
    spread = np.exp(sigma * rng.standard_normal(n_cat) - sigma * sigma / 2.0)
    n_items = np.maximum(1, np.rint(cfg.items_per_category * spread)).astype(np.int64)
    n_items = np.minimum(n_items, max(1, _MAX_ITEMS // n_cat))
    item_offset = np.zeros(n_cat + 1, dtype=np.int64)
    np.cumsum(n_items, out=item_offset[1:])
    s = cfg.item_zipf
    # Inverse CDF of the density ∝ x^-s on [1, n+1): x = (1 + U((n+1)^(1-s) - 1))^(1/(1-s)),
    # or x = (n+1)^U when s = 1; the item's popularity rank is floor(x) - 1.
    if math.isclose(s, 1.0):
        zipf_term = np.log(n_items + 1.0)
    else:
        zipf_term = (n_items + 1.0) ** (1.0 - s) - 1.0
    # Ids carry no popularity order: category and item ids are shuffled 1..N.
    category_ids = pa.array(rng.permutation(n_cat) + 1).cast(pa.string())
    item_ids = pa.array(rng.permutation(int(item_offset[-1])) + 1).cast(pa.string())
    return _Catalog(cdf, popularity, decay, n_items, item_offset, zipf_term, category_ids, item_ids)


def _active_fraction(cfg: SynthConfig) -> float:
    """ρ = E[min(D, T)] / T for the dormancy mixture: the share of the window users are active."""
    m, t = cfg.dormancy_mean_days, cfg.days
    return (1.0 - cfg.dormant_share) + cfg.dormant_share * (m / t) * -math.expm1(-t / m)


def _draw_users(
    cfg: SynthConfig, catalog: _Catalog, n: int, window_sec: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw one block of users: activity, dormancy, interests and their Hawkes parameters."""
    sigma = cfg.activity_sigma
    mean_activity = cfg.events_per_user_day / _active_fraction(cfg)
    activity = mean_activity * np.exp(sigma * rng.standard_normal(n) - sigma * sigma / 2.0)
    goes_dormant = rng.random(n) < cfg.dormant_share
    dormancy_days = rng.exponential(cfg.dormancy_mean_days, n)
    dormant_sec = np.ceil(np.minimum(dormancy_days, cfg.days + 1.0) * _SECONDS_PER_DAY)
    dormant_sec = dormant_sec.astype(np.int64)
    dormant = goes_dormant & (dormant_sec < window_sec)
    cutoff_sec = np.where(dormant, dormant_sec, window_sec).astype(np.int64)

    k = np.minimum(cfg.categories, 1 + rng.poisson(cfg.interests_mean - 1.0, n))
    pair_user, pair_cat = _draw_interests(rng, k, catalog.cdf)
    gamma = np.maximum(rng.gamma(cfg.interest_concentration, size=pair_user.size), 1e-300)
    weight = gamma / np.bincount(pair_user, gamma, minlength=n)[pair_user]
    eta = rng.uniform(*cfg.branching_range, size=pair_user.size)
    decay = catalog.decay[pair_cat]
    t = cfg.days
    # Expected count of a Hawkes process started empty on [0, T), per unit of μ.
    x = (1.0 - eta) * decay * t
    g = t / (1.0 - eta) - eta / ((1.0 - eta) ** 2 * decay) * -np.expm1(-x)
    baseline = activity[pair_user] * weight * t / g
    users = {
        "activity": activity,
        "dormant": dormant,
        "cutoff_sec": cutoff_sec,
        "n_interests": k.astype(np.int64),
    }
    pairs = {
        "user": pair_user,
        "cat": pair_cat,
        "baseline": baseline,
        "eta": eta,
        "decay": decay,
    }
    return users, pairs


def _draw_interests(
    rng: np.random.Generator, k: np.ndarray, cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k[u]`` distinct categories per user by popularity, without replacement.

    Why this way: the distinct values of an i.i.d. popularity stream, in order of first
    appearance, are exactly successive sampling without replacement, and cost O(k) per user
    instead of O(categories). Users short of ``k`` distinct draws get a longer stream.
    """
    n_users, n_cat = k.size, cdf.size
    need = k.astype(np.int64).copy()
    chosen_keys = np.empty(0, dtype=np.int64)  # user * n_cat + category, sorted
    rounds = 0
    while True:
        pending = np.flatnonzero(need > 0)
        if pending.size == 0:
            break
        length = (2 * need[pending] + 4) << min(rounds, 20)
        du = np.repeat(pending, length)
        dc = np.minimum(np.searchsorted(cdf, rng.random(du.size), side="right"), n_cat - 1)
        key = du * n_cat + dc
        fresh = ~np.isin(key, chosen_keys)
        idx = np.flatnonzero(fresh)
        order = idx[np.argsort(key[idx], kind="stable")]
        first = np.ones(order.size, dtype=bool)
        first[1:] = key[order[1:]] != key[order[:-1]]
        keep = np.sort(order[first])  # first appearances, back in stream order (user-major)
        users = du[keep]
        rank = _rank_within_groups(users)
        take = keep[rank < need[users]]
        need -= np.bincount(du[take], minlength=n_users)
        chosen_keys = np.sort(np.concatenate([chosen_keys, key[take]]))
        rounds += 1
    return chosen_keys // n_cat, chosen_keys % n_cat


def _rank_within_groups(sorted_groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each run of equal values of an array sorted by group."""
    n = sorted_groups.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
    return np.arange(n, dtype=np.int64) - run_start


def _draw_items(
    rng: np.random.Generator, cat: np.ndarray, catalog: _Catalog, zipf: float
) -> np.ndarray:
    """Global item index for each event of category ``cat``, by within-category popularity."""
    u = rng.random(cat.size)
    term = catalog.zipf_term[cat]
    x = np.exp(u * term) if math.isclose(zipf, 1.0) else (1.0 + u * term) ** (1.0 / (1.0 - zipf))
    rank = np.minimum(x.astype(np.int64) - 1, catalog.n_items[cat] - 1)
    return catalog.item_offset[cat] + np.maximum(rank, 0)


def _simulate(
    cfg: SynthConfig,
    catalog: _Catalog,
    users: dict[str, np.ndarray],
    pairs: dict[str, np.ndarray],
    rng: np.random.Generator,
    rng_marks: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Simulate all Hawkes processes of a block, generation by generation.

    Returns the kept events (in generation order) as arrays: ``pair``, ``sec`` (seconds since
    start), ``item``, ``code`` (behaviour code) and ``parent`` (index into these arrays, -1 for
    immigrants).
    """
    pair_cut_sec = users["cutoff_sec"][pairs["user"]]
    pair_cut = pair_cut_sec / _SECONDS_PER_DAY
    pair_cat, eta, decay = pairs["cat"], pairs["eta"], pairs["decay"]

    n0 = rng.poisson(pairs["baseline"] * pair_cut)
    pair = np.repeat(np.arange(n0.size, dtype=np.int64), n0)
    t = rng.random(pair.size) * pair_cut[pair]
    item = _draw_items(rng_marks, pair_cat[pair], catalog, cfg.item_zipf)
    parent = np.full(pair.size, -1, dtype=np.int64)
    parts: list[tuple[np.ndarray, ...]] = []
    offset = 0
    while pair.size:
        parts.append((pair, t, item, parent))
        children = rng.poisson(eta[pair])
        src = np.repeat(np.arange(pair.size, dtype=np.int64), children)
        child_pair = pair[src]
        child_t = t[src] + rng.standard_exponential(src.size) / decay[child_pair]
        alive = child_t < pair_cut[child_pair]
        src, child_pair, child_t = src[alive], child_pair[alive], child_t[alive]
        child_item = item[src]
        fresh = rng_marks.random(src.size) >= cfg.repeat_prob
        child_item[fresh] = _draw_items(
            rng_marks, pair_cat[child_pair[fresh]], catalog, cfg.item_zipf
        )
        parent = src + offset
        offset += pair.size
        pair, t, item = child_pair, child_t, child_item

    if parts:
        pair, t, item, parent = (np.concatenate(cols) for cols in zip(*parts, strict=True))
    sec = (t * _SECONDS_PER_DAY).astype(np.int64)  # t >= 0: truncation is floor
    # Float rounding may put an event on the cutoff second; drop it (its children are later).
    keep = sec < pair_cut_sec[pair]
    if not keep.all():
        new_index = np.cumsum(keep) - 1
        pair, sec, item, parent = pair[keep], sec[keep], item[keep], parent[keep]
        parent = np.where(parent >= 0, new_index[np.maximum(parent, 0)], -1)
    cum = np.cumsum(cfg.behavior_shares)
    cum[-1] = 1.0
    code = np.minimum(np.searchsorted(cum, rng_marks.random(pair.size), side="right"), 3)
    if cfg.basket_size_mean > 1:  # an order's further lines: same second, same category
        extra = rng_marks.poisson(cfg.basket_size_mean - 1, pair.size)
        rows = np.concatenate([np.arange(pair.size), np.repeat(np.arange(pair.size), extra)])
        lines = _draw_items(rng_marks, pair_cat[pair[rows[pair.size :]]], catalog, cfg.item_zipf)
        item = np.concatenate([item, lines])
        pair, sec, code = pair[rows], sec[rows], code[rows]
        parent = np.where(np.arange(rows.size) < parent.size, parent[rows], -1)
    return {"pair": pair, "sec": sec, "item": item, "code": code.astype(np.int8), "parent": parent}


def _events_schema(cfg: SynthConfig) -> pa.Schema:
    cols = [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("category_id", pa.string(), nullable=False),
        pa.field("behavior", pa.string(), nullable=False),
        pa.field("ts", pa.int64(), nullable=False),
    ]
    if cfg.keep_lineage:
        cols.append(pa.field("parent_row", pa.int64()))
    return pa.schema(cols)


_BEHAVIOR_WORDS = pa.array([TAOBAO_BEHAVIOR_WORDS[b] for b in BEHAVIORS], pa.string())


def _events_batch(
    cfg: SynthConfig,
    catalog: _Catalog,
    user_ids: pa.Array,
    users: dict[str, np.ndarray],
    pairs: dict[str, np.ndarray],
    ev: dict[str, np.ndarray],
    start_epoch: int,
    rows_before: int,
) -> pa.RecordBatch:
    """Sort a block's events by (user, time) and turn them into Arrow columns."""
    user_local = pairs["user"][ev["pair"]]
    key = (user_local << 32) | ev["sec"]
    order = np.argsort(key, kind="stable")
    pair = ev["pair"][order]
    cols: list[pa.Array] = [
        user_ids.take(pa.array(users["global"][pairs["user"][pair]])),
        catalog.item_ids.take(pa.array(ev["item"][order])),
        catalog.category_ids.take(pa.array(pairs["cat"][pair])),
        _BEHAVIOR_WORDS.take(pa.array(ev["code"][order])),
        pa.array(ev["sec"][order] + start_epoch, pa.int64()),
    ]
    if cfg.keep_lineage:
        position = np.empty_like(order)
        position[order] = np.arange(order.size, dtype=np.int64)
        parent = ev["parent"][order]
        is_child = parent >= 0
        row = np.where(is_child, position[np.maximum(parent, 0)] + rows_before, 0)
        cols.append(pa.array(row, pa.int64(), mask=~is_child))
    return pa.RecordBatch.from_arrays(cols, schema=_events_schema(cfg))


def _categories_table(catalog: _Catalog, n_events: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "category_id": catalog.category_ids,
            "decay_per_day": catalog.decay,
            "half_life_days": math.log(2.0) / catalog.decay,
            "popularity": catalog.popularity,
            "n_items": catalog.n_items,
            "n_events": n_events,
        }
    )


def _interests_table(
    catalog: _Catalog, user_ids: pa.Array, parts: list[dict[str, np.ndarray]]
) -> pa.Table:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in parts])

    decay = cat("decay")
    eta = cat("eta")
    return pa.table(
        {
            "user_id": user_ids.take(pa.array(cat("user_global"))),
            "category_id": catalog.category_ids.take(pa.array(cat("cat"))),
            "baseline_per_day": cat("baseline"),
            "excitation_per_day": eta * decay,
            "decay_per_day": decay,
            "half_life_days": math.log(2.0) / decay,
            "branching_ratio": eta,
            "n_events": cat("n_events").astype(np.int64),
        }
    )


def _users_table(
    user_ids: pa.Array, parts: list[dict[str, np.ndarray]], start_epoch: int
) -> pa.Table:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in parts])

    dormant = cat("dormant")
    return pa.table(
        {
            "user_id": user_ids,
            "activity_per_day": cat("activity"),
            "dormant_at_ts": pa.array(cat("cutoff_sec") + start_epoch, pa.int64(), mask=~dormant),
            "n_interests": cat("n_interests"),
            "n_events": cat("n_events"),
        }
    )


def write_taobao_csv(log: SyntheticLog, path: Path) -> int:
    """Write the events as a Taobao UserBehavior file, so every reader can be tested on it.

    Format: no header, no quotes, ``user_id,item_id,category_id,behavior,ts`` per line;
    gzip-compressed when ``path`` ends with ``.gz``. Parent folders are created.

    Parameters
    ----------
    log : SyntheticLog
        What `generate` returned.
    path : Path
        Output file (``.csv`` or ``.csv.gz``); overwritten if it exists.

    Returns
    -------
    int
        Rows written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = log.events.select(list(_TAOBAO_COLUMNS))
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=65_536)
    if path.name.endswith(".gz"):
        # gzip level 6 (the gzip tool's default) is 3x faster than Arrow's level 9 for 1% more
        # bytes; mtime=0 and no file name in the header keep the bytes a function of the seed.
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as sink,
        ):
            pacsv.write_csv(table, sink, options)
    else:
        pacsv.write_csv(table, str(path), options)
    return table.num_rows


def order_log_config(users: int = 1000, seed: int = 3) -> SynthConfig:
    """A shop's order log: a year of purchases only, several lines per order, people who
    stop buying for good; written without categories by `write_order_csv`."""
    return SynthConfig(
        users=users,
        days=365.0,
        categories=20,
        items_per_category=50,
        events_per_user_day=0.05,
        half_life_days=(3.0, 30.0),
        branching_range=(0.3, 0.7),
        dormant_share=0.6,
        dormancy_mean_days=150.0,
        behavior_shares=(0.0, 0.0, 0.0, 1.0),
        basket_size_mean=2.5,
        start=datetime(2023, 1, 1, tzinfo=UTC),
        seed=seed,
    )


def write_order_csv(log: SyntheticLog, path: Path) -> int:
    """Write the events as an order export: ``order_id,user_id,product_id,ordered_at``
    (ISO 8601 UTC), one line per product, the lines of an order sharing its second; no
    category or behaviour column. Returns the rows written."""
    events = log.events
    seconds = events.column("ts").to_numpy()
    users = events.column("user_id").to_numpy(zero_copy_only=False).astype(str)
    order_ids = np.char.add(np.char.add(users, "-"), seconds.astype(str))
    table = pa.table(
        {
            "order_id": pa.array(order_ids),
            "user_id": events.column("user_id"),
            "product_id": events.column("item_id"),
            "ordered_at": pa.array(seconds * 1_000_000, pa.timestamp("us", tz="UTC")),
        }
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(table, str(path))
    return table.num_rows


_TRUTH_README = """\
Ground truth of a synthetic ebbtide log (ebbtide.synthetic; process in its module docstring).
Times are days; rates are per day; ts are UTC epoch seconds.

categories.parquet, one row per category:
  category_id, decay_per_day (delta_c), half_life_days (ln 2 / delta_c),
  popularity (share when users pick interests), n_items, n_events (in the log)
interests.parquet, one row per (user, interest category); intensity
  lambda(t) = baseline + sum over earlier events j of excitation * exp(-decay * (t - t_j)):
  user_id, category_id, baseline_per_day (mu), excitation_per_day (alpha = eta * delta),
  decay_per_day (delta), half_life_days, branching_ratio (eta = alpha / delta), n_events
users.parquet, one row per user (users with no events included):
  user_id, activity_per_day (expected events/day had the user stayed active),
  dormant_at_ts (first quiet second; every event has ts < it; null = not within the window),
  n_interests, n_events

config: {config!r}
"""


def write_truth(log: SyntheticLog, directory: Path) -> list[Path]:
    """Write the truth tables as Parquet (plus a README.txt), for recovery checks outside Python.

    Parameters
    ----------
    log : SyntheticLog
        What `generate` returned.
    directory : Path
        Created if missing; ``categories.parquet``, ``interests.parquet``, ``users.parquet``
        and ``README.txt`` are (over)written there.

    Returns
    -------
    list of Path
        The files written, in that order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (
        ("categories", log.truth_categories),
        ("interests", log.truth_interests),
        ("users", log.truth_users),
    ):
        path = directory / f"{name}.parquet"
        pq.write_table(table, path)
        written.append(path)
    readme = directory / "README.txt"
    readme.write_text(_TRUTH_README.format(config=log.config), encoding="utf-8")
    written.append(readme)
    return written
