"""Synthetic logs with searches, recommendation impressions and clicks, and ratings, with truth.

Why: whether searches feed interest, what a recommendation's click-through and conversion
rates are, and how satisfied buyers are can only be *shown* to be measured right against
values that are known. No real log tells which category a query was about, nor a
placement's true click probability; this one draws them, and writes them beside the log.

Generative process
------------------
The view/cart/fav/buy events are an `ebbtide.synthetic.generate` log of ``config.log`` (its
Hawkes truth holds; times are in epoch seconds, ``H_u`` is the end of user ``u``'s activity:
dormancy or the end of the window). Everything below draws from random streams of its own,
spawned from the same seed, so the base log is the same and, say, changing the CTR leaves the
searches where they were.

1. **Vocabulary.** Each category gets 2 to 4 *own* pseudo-words (unique to it) and 1 or 2
   words from a *shared* pool of ``max(2, categories // 3)`` words, so a shared word belongs to
   several categories and is ambiguous alone. Its ``queries_per_category`` phrasings are drawn
   without replacement from: one own word, or two in either order, each alone or with one of
   its shared words before or after. Every query thus holds an own word and has exactly one
   true category. A search picks one of its category's phrasings with weights ``1 / rank``.
2. **New interests, announced by a search.** Each user gets ``Poisson(new_interests_mean)``
   categories outside their interests (by popularity; repeats and existing interests are
   dropped, so slightly fewer). For each: a search at ``S ~ U[start, H_u)``, the first event
   in that category at ``S + D``, ``D = 1 min + Exp(mean new_interest_delay_hours)``, and from
   then on a Hawkes process with the category's decay, ``η ~ U(branching_range)`` and baseline
   ``μ = a_u (1 − η) / (K_u + 1)`` (a settled rate of an average interest's share,
   ``a_u / (K_u + 1)``): the announced first event plus ``Poisson(μ (H_u − S − D))``
   immigrants, each with Poisson(η) children at ``Exp(δ)`` delays, all before ``H_u``.
3. **Searches before bursts.** Every *immigrant* event (an arrival of interest not caused by an
   earlier event: the base log's and the new interests' other than the announced first one)
   is preceded, with probability ``search_before_burst``, by a search for a query of its
   category, ``30 s + Exp(mean search_lead_minutes)`` earlier (not before the window starts).
4. **Noise.** Beside each search of steps 2 and 3, with probability ``s / (1 − s)``
   (``s = noise_search_share``), a search of the same user at a time uniform on
   ``[start, H_u)`` for a query of a category drawn by popularity: it announces nothing.
5. **Recommendations.** Each user is in arm ``personalised`` with probability
   ``treated_share``, else ``control`` (independent of everything else). Each view, cart, fav
   or buy (a visit) shows, with probability ``impression_prob``, ``slate_size`` impressions at
   ``placement`` in the same second: for control, items by overall popularity (the item of a
   uniformly drawn event); for personalised, a category drawn from the user's interests by
   their baselines, then an item of it by popularity. Each impression is clicked with
   probability ``ctr[arm]``, ``2 s + Exp(mean 20 s)`` later (same user, item, placement).
   Each click converts with probability ``conversion[arm]`` into a buy of the same item after
   a delay ``Exp(mean 2 h)`` truncated to ``(0, attribution_window]``.
   Organic buys of a clicked (user, item) within the window after the click are written as
   views, so a buy of the clicked item within the window after a click occurs exactly when
   the click converted (except when the same user clicks the same item again within a
   window: its buy then follows both clicks, which happens for a fraction of a per cent of
   clicks). Clicks and their buys are kept even when they fall after the window's end (by at
   most a minute and a window), so conversion is not censored at the end of the log.
6. **Ratings.** Each buy, organic or converted, is rated with probability ``rating_prob``,
   ``1 min + Exp(mean 1 day)`` later when that is before the window's end, with value
   ``clip(round(m_c + shift + N(0, 1)), 1, 5)``: ``m_c ~ U(3, 4.5)`` per category, ``shift =
   rating_shift[arm]`` for a converted click's buy and 0 for an organic one.

Output rows are sorted by user (string order), time, then search, view, cart, fav, buy,
impression, click, rate; ties beyond that keep generation order, so the same seed gives the
same bytes.

Examples
--------
>>> log = generate_behaviours(BehaviourConfig(log=SynthConfig(users=50, days=2.0, categories=10)))
>>> log.events.column_names
['user_id', 'item_id', 'category_id', 'behavior', 'timestamp', 'query', 'value', 'placement']
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtr

from ebbtide.errors import ConfigError
from ebbtide.ingest import ColumnMapping
from ebbtide.schema import BEHAVIORS, ITEM_BEHAVIORS, Behavior
from ebbtide.synthetic import (
    TAOBAO_BEHAVIOR_WORDS,
    SynthConfig,
    SyntheticLog,
    generate,
    write_plain_csv,
    write_truth,
)

__all__ = [
    "ARMS",
    "GENERIC_COLUMNS",
    "GENERIC_MAPPING",
    "BehaviourConfig",
    "BehaviourLog",
    "generate_behaviours",
    "write_behaviour_truth",
    "write_generic_csv",
]

#: Recommendation arms, control first (the order of `BehaviourConfig.ctr` and friends).
ARMS = ("control", "personalised")
#: Header of the generic CSV, in order.
GENERIC_COLUMNS = (
    "user_id",
    "item_id",
    "category_id",
    "behavior",
    "timestamp",
    "query",
    "value",
    "placement",
)
#: How `ebbtide ingest --format generic` reads the file `write_generic_csv` writes.
GENERIC_MAPPING = ColumnMapping(
    user_col="user_id",
    item_col="item_id",
    category_col="category_id",
    behavior_col="behavior",
    time_col="timestamp",
    time_format="epoch_s",
    query_col="query",
    value_col="value",
    placement_col="placement",
    rating_range=(1.0, 5.0),
)
#: Canonical behaviour words by code.
_WORDS = tuple(b.value for b in BEHAVIORS)
_VIEW, _BUY, _SEARCH, _CLICK, _IMPRESSION, _RATE = (
    b.code
    for b in (
        Behavior.VIEW,
        Behavior.BUY,
        Behavior.SEARCH,
        Behavior.CLICK,
        Behavior.IMPRESSION,
        Behavior.RATE,
    )
)
#: Order within one second, by code: search first, impression before its click, rate last.
_TIE_RANK = np.array([1, 2, 3, 4, 0, 6, 5, 7], dtype=np.int64)
_SEARCH_KINDS = ("burst", "new_interest", "noise")
_RATING_SOURCES = ("organic", *ARMS)

_DAY = 86_400
_RATING_SD = 1.0
_RATING_MEAN_RANGE = (3.0, 4.5)
_RATING_DELAY_DAYS = 1.0
_CLICK_DELAY_SECONDS = 20.0
_BUY_DELAY_HOURS = 2.0
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")


def _fail(name: str, value: object, allowed: str) -> ConfigError:
    return ConfigError(
        f"BehaviourConfig.{name} = {value!r} is out of range; allowed: {allowed}. "
        f"Pass a value in that range."
    )


def _check_share(name: str, value: object, high: float = 1.0) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and 0.0 <= value <= high):  # type: ignore[operator]
        raise _fail(name, value, f"a number in [0, {high:g}]")


def _check_positive(name: str, value: object, high: float) -> None:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and 0.0 < value <= high):  # type: ignore[operator]
        raise _fail(name, value, f"a number in (0, {high:g}]")


def _check_pair(name: str, value: object, low: float, high: float) -> None:
    ok = isinstance(value, tuple) and len(value) == len(ARMS)
    ok = ok and all(
        isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high
        for v in value  # type: ignore[union-attr]
    )
    if not ok:
        raise _fail(name, value, f"({', '.join(ARMS)}), each in [{low:g}, {high:g}]")


@dataclass(frozen=True, slots=True, kw_only=True)
class BehaviourConfig:
    """What shapes the searches, recommendations and ratings laid over a synthetic log.

    Parameters
    ----------
    log : SynthConfig
        The view/cart/fav/buy log underneath (and the seed of everything);
        ``basket_size_mean`` must be 1, as every event's lineage is needed.
    queries_per_category : int
        Distinct query phrasings per category (at least 1; fewer when the words allow fewer).
    search_before_burst : float
        Probability that an immigrant event (a burst of interest) follows a search.
    search_lead_minutes : float
        Mean of the exponential part of the lead of a search before its burst.
    new_interests_mean : float
        Mean number of new interests per user, each announced by a search.
    new_interest_delay_hours : float
        Mean of the exponential part of the delay from that search to the first event.
    noise_search_share : float
        About this share of all searches announce nothing, in ``[0, 0.5]``.
    placement : str
        Placement id of the recommendations (the ``placement`` of impressions and clicks).
    treated_share : float
        Probability that a user is in arm ``personalised``.
    impression_prob : float
        Probability that a visit shows a slate of recommendations.
    slate_size : int
        Impressions per slate.
    ctr : tuple of 2 floats
        True click probability per impression, (control, personalised).
    conversion : tuple of 2 floats
        True probability that a click is followed by a buy of its item within the window.
    attribution_window : timedelta
        Longest delay from a click to its buy (default one day).
    rating_prob : float
        Probability that a buy is rated.
    rating_shift : tuple of 2 floats
        Added to the latent rating of a buy that followed a click, (control, personalised).
    """

    log: SynthConfig = field(default_factory=SynthConfig)
    queries_per_category: int = 6
    search_before_burst: float = 0.5
    search_lead_minutes: float = 5.0
    new_interests_mean: float = 2.0
    new_interest_delay_hours: float = 12.0
    noise_search_share: float = 0.1
    placement: str = "home_recs"
    treated_share: float = 0.5
    impression_prob: float = 0.1
    slate_size: int = 3
    ctr: tuple[float, float] = (0.04, 0.08)
    conversion: tuple[float, float] = (0.10, 0.20)
    attribution_window: timedelta = timedelta(days=1)
    rating_prob: float = 0.3
    rating_shift: tuple[float, float] = (0.0, 0.3)

    def __post_init__(self) -> None:
        """Check every field, naming the field, the value and the allowed range."""
        if not isinstance(self.log, SynthConfig):
            raise _fail("log", self.log, "a SynthConfig")
        if self.log.basket_size_mean != 1.0:
            raise _fail("log", self.log, "a SynthConfig with basket_size_mean = 1")
        for name, high in (("queries_per_category", 64), ("slate_size", 100)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
                raise _fail(name, value, f"an integer in [1, {high}]")
        for name in ("search_before_burst", "treated_share", "impression_prob", "rating_prob"):
            _check_share(name, getattr(self, name))
        _check_share("noise_search_share", self.noise_search_share, 0.5)
        _check_share("new_interests_mean", self.new_interests_mean, 100.0)
        _check_positive("search_lead_minutes", self.search_lead_minutes, 1e4)
        _check_positive("new_interest_delay_hours", self.new_interest_delay_hours, 1e5)
        if not isinstance(self.placement, str) or not self.placement.strip():
            raise _fail("placement", self.placement, "a non-empty text without commas")
        if "," in self.placement or '"' in self.placement or "\n" in self.placement:
            raise _fail("placement", self.placement, "a non-empty text without commas")
        _check_pair("ctr", self.ctr, 0.0, 1.0)
        _check_pair("conversion", self.conversion, 0.0, 1.0)
        _check_pair("rating_shift", self.rating_shift, -4.0, 4.0)
        window = self.attribution_window
        if not isinstance(window, timedelta) or not timedelta(seconds=1) <= window:
            raise _fail("attribution_window", window, "a timedelta of at least one second")


@dataclass(frozen=True)
class BehaviourLog:
    """A log with searches, impressions, clicks and ratings, and the truth behind them.

    Attributes
    ----------
    events : pyarrow.Table
        `GENERIC_COLUMNS`: ``user_id``, ``item_id``, ``category_id`` (strings; null on a
        search), ``behavior`` (canonical word), ``timestamp`` (int64 epoch seconds),
        ``query`` (searches only), ``value`` (float64, ratings only), ``placement``
        (impressions and clicks only).
    base : SyntheticLog
        The view/cart/fav/buy log underneath, with its Hawkes truth (its ``events`` keep
        their Taobao words and every buy; ``events`` here has the relabelled views).
    truth_queries : pyarrow.Table
        One row per distinct query: ``query``, ``category_id`` (its true category),
        ``weight`` (probability of this phrasing when its category is searched),
        ``n_words``, ``has_shared_word``, ``n_searches`` (in the log).
    truth_words : pyarrow.Table
        One row per (word, category): ``word``, ``category_id``, ``shared``.
    truth_searches : pyarrow.Table
        One row per search: ``user_id``, ``timestamp``, ``query``, ``category_id``, ``kind``
        (``burst``, ``new_interest`` or ``noise``), ``engaged_at`` (int64 epoch s of the
        event it announces, possibly past the window's end for a new interest; null for
        noise); sorted by user (string order) and time.
    truth_new_interests : pyarrow.Table
        ``user_id``, ``category_id``, ``searched_at``, ``first_event_at`` (epoch s; the first
        event exists only when before the user's end), ``baseline_per_day``,
        ``branching_ratio``, ``decay_per_day``, ``n_events``.
    truth_arms : pyarrow.Table
        One row per arm: ``arm``, ``share``, ``ctr``, ``conversion``, ``rating_shift``,
        ``placement``, ``attribution_window_s``, ``users``, ``impressions``, ``clicks``,
        ``conversions`` (the last four realised).
    assignments : pyarrow.Table
        A campaign log, one row per user: ``user_id``, ``arm``, ``impressions``, ``clicks``,
        ``conversions``, ``clicked`` and ``converted`` (0/1: at least one).
    truth_ratings : pyarrow.Table
        One row per (category, source): ``category_id``, ``source`` (``organic`` or an arm),
        ``latent_mean``, ``sd``, ``expected_rating`` (exact mean of the rounded, clipped
        value), ``n_ratings``.
    config : BehaviourConfig
        What generated it.
    """

    events: pa.Table
    base: SyntheticLog
    truth_queries: pa.Table
    truth_words: pa.Table
    truth_searches: pa.Table
    truth_new_interests: pa.Table
    truth_arms: pa.Table
    assignments: pa.Table
    truth_ratings: pa.Table
    config: BehaviourConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class _Streams:
    """The random streams of the added behaviours, one per step of the process."""

    vocabulary: np.random.Generator
    new_interests: np.random.Generator
    searches: np.random.Generator
    recommendations: np.random.Generator
    ratings: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> _Streams:
        # A spawn key of its own keeps these apart from the base log's streams (keys 0, 1, 2).
        root = np.random.SeedSequence(seed, spawn_key=(20,))
        names = ("vocabulary", "new_interests", "searches", "recommendations", "ratings")
        children = root.spawn(len(names))
        return cls(**{n: np.random.default_rng(s) for n, s in zip(names, children, strict=True)})


@dataclass(frozen=True, slots=True)
class _World:
    """The base log as integer arrays, and what the added steps draw from."""

    user_ids: pa.Array  # string per user index (string order)
    category_ids: pa.Array  # string per category index (truth order)
    item_ids: pa.Array  # string per item index (dictionary of the base log)
    user: np.ndarray  # per base row
    sec: np.ndarray
    item: np.ndarray
    cat: np.ndarray
    code: np.ndarray
    immigrant: np.ndarray  # bool per base row
    horizon: np.ndarray  # per user: first second without activity (epoch s)
    activity: np.ndarray  # per user, a_u
    n_interests: np.ndarray  # per user, K_u
    interest_user: np.ndarray  # per interest pair, sorted by user
    interest_cat: np.ndarray
    interest_weight: np.ndarray  # baseline, 0 where the category has no events to show
    popularity: np.ndarray  # per category (the base truth's)
    decay: np.ndarray  # per category, per day
    pool_rows: np.ndarray  # base rows sorted by category
    pool_start: np.ndarray  # first position of each category in pool_rows
    pool_count: np.ndarray
    start: int  # epoch s of the window's start
    end: int  # epoch s of the window's end

    @classmethod
    def from_log(cls, log: SyntheticLog) -> _World:
        cfg = log.config
        ev, users = log.events, log.truth_users
        user_ids, category_ids = users.column("user_id"), log.truth_categories.column("category_id")
        taobao = pa.array([TAOBAO_BEHAVIOR_WORDS[b] for b in ITEM_BEHAVIORS])
        items = ev.column("item_id").combine_chunks().dictionary_encode()
        cat = _index(ev.column("category_id"), category_ids)
        n_cat = len(category_ids)
        pool_count = np.bincount(cat, minlength=n_cat)
        start = math.floor(cfg.start.timestamp())
        end = start + math.ceil(cfg.days * _DAY)
        dormant = users.column("dormant_at_ts").to_numpy(zero_copy_only=False)
        interests = log.truth_interests
        i_user = _index(interests.column("user_id"), user_ids)
        i_cat = _index(interests.column("category_id"), category_ids)
        by_user = np.argsort(i_user, kind="stable")
        weight = interests.column("baseline_per_day").to_numpy() * (pool_count[i_cat] > 0)
        return cls(
            user_ids=user_ids.combine_chunks(),
            category_ids=category_ids.combine_chunks(),
            item_ids=items.dictionary,
            user=_index(ev.column("user_id"), user_ids),
            sec=ev.column("ts").to_numpy(),
            item=items.indices.to_numpy().astype(np.int64),
            cat=cat,
            code=_index(ev.column("behavior"), taobao),
            immigrant=ev.column("parent_row").is_null().to_numpy(zero_copy_only=False),
            horizon=np.where(np.isnan(dormant), end, dormant).astype(np.int64),
            activity=users.column("activity_per_day").to_numpy(),
            n_interests=users.column("n_interests").to_numpy(),
            interest_user=i_user[by_user],
            interest_cat=i_cat[by_user],
            interest_weight=weight[by_user],
            popularity=log.truth_categories.column("popularity").to_numpy(),
            decay=log.truth_categories.column("decay_per_day").to_numpy(),
            pool_rows=np.argsort(cat, kind="stable"),
            pool_start=np.r_[0, np.cumsum(pool_count)[:-1]],
            pool_count=pool_count,
            start=start,
            end=end,
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def draw_rows(self, rng: np.random.Generator, cat: np.ndarray) -> np.ndarray:
        """A base row of each category in ``cat`` (all with events), uniformly: its item
        is then drawn by the category's item popularity as the log shows it."""
        position = (rng.random(cat.size) * self.pool_count[cat]).astype(np.int64)
        return self.pool_rows[self.pool_start[cat] + position]

    def draw_categories(
        self, rng: np.random.Generator, size: int, *, with_events: bool
    ) -> np.ndarray:
        """Categories by popularity (only among those with events to draw items from, when
        ``with_events``; there must be some)."""
        weight = self.popularity * (self.pool_count > 0) if with_events else self.popularity
        cdf = np.cumsum(weight)
        found = np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right")
        return np.minimum(found, cdf.size - 1)


def _index(values: pa.ChunkedArray | pa.Array, universe: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Position of each value in ``universe`` (every value must be there)."""
    found = pc.index_in(values, value_set=pa.chunked_array([universe]).combine_chunks())
    return found.to_numpy(zero_copy_only=False).astype(np.int64)


def _rows(
    user: np.ndarray,
    sec: np.ndarray,
    code: np.ndarray | int,
    *,
    item: np.ndarray | None = None,
    cat: np.ndarray | None = None,
    query: np.ndarray | None = None,
    value: np.ndarray | None = None,
    placed: bool = False,
) -> dict[str, np.ndarray]:
    """Output rows as aligned arrays; -1, NaN and False stand for missing."""
    n = user.size

    def fill(values: np.ndarray | None, missing: float, dtype: type) -> np.ndarray:
        return np.full(n, missing, dtype=dtype) if values is None else values.astype(dtype)

    return {
        "user": user.astype(np.int64),
        "sec": sec.astype(np.int64),
        "code": np.broadcast_to(np.asarray(code, dtype=np.int64), (n,)).copy(),
        "item": fill(item, -1, np.int64),
        "cat": fill(cat, -1, np.int64),
        "query": fill(query, -1, np.int64),
        "value": fill(value, np.nan, np.float64),
        "placed": np.full(n, placed),
    }


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def generate_behaviours(
    config: BehaviourConfig, *, progress: Callable[[int, int], None] | None = None
) -> BehaviourLog:
    """Simulate a log with searches, recommendations, clicks and ratings, and its truth.

    Parameters
    ----------
    config : BehaviourConfig
        What to simulate; ``config.log.seed`` fixes every random draw.
    progress : callable, optional
        Passed to `ebbtide.synthetic.generate`: ``progress(users_done, users_total)``.

    Returns
    -------
    BehaviourLog
        The events in `GENERIC_COLUMNS` and the truth tables (the process is in the module
        docstring).

    Examples
    --------
    >>> cfg = BehaviourConfig(log=SynthConfig(users=40, days=2.0, categories=8), ctr=(0.1, 0.2))
    >>> generate_behaviours(cfg).truth_arms.column("ctr").to_pylist()
    [0.1, 0.2]
    """
    cfg = config
    with_lineage = generate(replace(cfg.log, keep_lineage=True), progress=progress)
    world = _World.from_log(with_lineage)
    # Lineage only adds columns (the draws are the same): it shows which events are immigrants.
    base_events = with_lineage.events
    if not cfg.log.keep_lineage:
        base_events = base_events.drop_columns(["parent_row", "kernel"])
    base = replace(with_lineage, events=base_events, config=cfg.log)
    streams = _Streams.from_seed(cfg.log.seed)
    vocabulary = _Vocabulary.draw(cfg, len(world.category_ids), streams.vocabulary)
    new_rows, new_immigrant, new_truth = _new_interests(cfg, world, streams.new_interests)
    base_rows = _rows(world.user, world.sec, world.code, item=world.item, cat=world.cat)
    organic = _concat([base_rows, new_rows])
    searches = _searches(
        cfg,
        world,
        vocabulary,
        organic,
        np.r_[world.immigrant, new_immigrant],
        new_truth,
        streams.searches,
    )
    recs = _recommendations(cfg, world, organic, streams.recommendations)
    rated = _ratings(cfg, world, recs, streams.ratings)
    parts = [recs.organic, searches.rows, recs.impressions, recs.clicks, recs.buys, rated.rows]
    events = _events_table(world, vocabulary, cfg.placement, _concat(parts))
    return BehaviourLog(
        events=events,
        base=base,
        truth_queries=vocabulary.queries_table(world, searches.rows["query"]),
        truth_words=vocabulary.words_table(world),
        truth_searches=searches.truth_table(world, vocabulary),
        truth_new_interests=_new_interests_table(world, new_truth),
        truth_arms=recs.arms_table(cfg),
        assignments=recs.assignments_table(world),
        truth_ratings=rated.truth,
        config=cfg,
    )


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    """Words and query phrasings per category."""

    words: list[str]  # every word; own words first, then the shared pool
    word_categories: list[tuple[int, int, bool]]  # (word index, category, shared)
    texts: pa.Array  # query text per query index
    query_cat: np.ndarray  # category per query index
    query_weight: np.ndarray
    query_shared: np.ndarray  # bool: has a shared word
    query_words: np.ndarray  # number of words
    query_start: np.ndarray  # first query index of each category
    query_count: np.ndarray
    query_key: np.ndarray  # category + cumulative weight within it: increasing

    @classmethod
    def draw(cls, cfg: BehaviourConfig, n_cat: int, rng: np.random.Generator) -> _Vocabulary:
        """Draw the words and phrasings; Python loops here run over categories, not events."""
        own_counts = rng.integers(2, 5, n_cat)
        n_shared = max(2, n_cat // 3)
        words = _pseudo_words(rng, int(own_counts.sum()) + n_shared)
        own_first = np.r_[0, np.cumsum(own_counts)[:-1]]
        pool_first = int(own_counts.sum())
        word_categories: list[tuple[int, int, bool]] = []
        texts, cats, weights, cdfs, shared_flags, lengths = [], [], [], [], [], []
        for c in range(n_cat):
            own = list(range(own_first[c], own_first[c] + own_counts[c]))
            shared = sorted(
                pool_first + rng.choice(n_shared, 1 + int(rng.random() < 0.5), replace=False)
            )
            word_categories += [(w, c, False) for w in own] + [(w, c, True) for w in shared]
            phrasings = [[w] for w in own] + [list(p) for p in itertools.permutations(own, 2)]
            candidates = [(p, False) for p in phrasings]
            candidates += [([s, *p], True) for p in phrasings for s in shared]
            candidates += [([*p, s], True) for p in phrasings for s in shared]
            take = min(cfg.queries_per_category, len(candidates))
            picked = rng.choice(len(candidates), take, replace=False)
            weight = 1.0 / np.arange(1, take + 1)
            weights += (weight / weight.sum()).tolist()
            cdfs += (np.cumsum(weight) / weight.sum()).tolist()
            for index in picked:
                phrase, has_shared = candidates[index]
                texts.append(" ".join(words[w] for w in phrase))
                cats.append(c)
                shared_flags.append(has_shared)
                lengths.append(len(phrase))
        query_cat = np.array(cats, dtype=np.int64)
        query_count = np.bincount(query_cat, minlength=n_cat)
        return cls(
            words=words,
            word_categories=word_categories,
            texts=pa.array(texts, pa.string()),
            query_cat=query_cat,
            query_weight=np.array(weights),
            query_shared=np.array(shared_flags),
            query_words=np.array(lengths, dtype=np.int64),
            query_start=np.r_[0, np.cumsum(query_count)[:-1]],
            query_count=query_count,
            query_key=query_cat + np.minimum(np.array(cdfs), 1.0),
        )

    def draw_queries(self, rng: np.random.Generator, cat: np.ndarray) -> np.ndarray:
        """A query index of each category in ``cat``, by the phrasings' weights."""
        found = np.searchsorted(self.query_key, cat + rng.random(cat.size), side="right")
        last = self.query_start[cat] + self.query_count[cat] - 1
        return np.clip(found, self.query_start[cat], last)

    def queries_table(self, world: _World, searched: np.ndarray) -> pa.Table:
        return pa.table(
            {
                "query": self.texts,
                "category_id": world.category_ids.take(pa.array(self.query_cat)),
                "weight": self.query_weight,
                "n_words": self.query_words,
                "has_shared_word": self.query_shared,
                "n_searches": np.bincount(searched, minlength=len(self.texts)).astype(np.int64),
            }
        )

    def words_table(self, world: _World) -> pa.Table:
        word, cat, shared = zip(*self.word_categories, strict=True)
        return pa.table(
            {
                "word": pa.array([self.words[w] for w in word], pa.string()),
                "category_id": world.category_ids.take(pa.array(np.array(cat, dtype=np.int64))),
                "shared": pa.array(shared, pa.bool_()),
            }
        )


def _pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` distinct pronounceable pseudo-words of 3 syllables (4 when 3 would not do)."""
    base = len(_SYLLABLES)
    length = 3 if n <= base**3 // 4 else 4
    codes = rng.choice(base**length, n, replace=False)
    words = []
    for code in codes.tolist():
        parts = []
        for _ in range(length):
            code, digit = divmod(code, base)
            parts.append(_SYLLABLES[digit])
        words.append("".join(parts))
    return words


@dataclass(frozen=True, slots=True)
class _NewInterests:
    user: np.ndarray
    cat: np.ndarray
    searched: np.ndarray  # epoch s
    first: np.ndarray  # epoch s of the announced first event (may be past the user's end)
    eta: np.ndarray
    baseline: np.ndarray
    n_events: np.ndarray


def _new_interests(
    cfg: BehaviourConfig, world: _World, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray, _NewInterests]:
    """Step 2: new interests, their events (rows, immigrant flags) and their truth."""
    n_cat = len(world.category_ids)
    mean = cfg.new_interests_mean if world.sec.size else 0.0  # no events, no items to engage
    user = np.repeat(np.arange(world.n_users), rng.poisson(mean, world.n_users))
    cat = world.draw_categories(rng, user.size, with_events=True)
    key = user * n_cat + cat
    _, first_of_key = np.unique(key, return_index=True)
    fresh = np.zeros(key.size, dtype=bool)
    fresh[first_of_key] = True
    fresh &= ~np.isin(key, world.interest_user * n_cat + world.interest_cat)
    user, cat = user[fresh], cat[fresh]
    horizon = world.horizon[user]
    searched = world.start + (rng.random(user.size) * (horizon - world.start)).astype(np.int64)
    delay = 60.0 + rng.exponential(cfg.new_interest_delay_hours * 3600.0, user.size)
    first = searched + delay.astype(np.int64)
    eta = rng.uniform(*cfg.log.branching_range, size=user.size)
    baseline = world.activity[user] * (1.0 - eta) / (world.n_interests[user] + 1.0)
    decay = world.decay[cat]

    live = first < horizon
    span = np.where(live, horizon - first, 0)
    announced = np.flatnonzero(live)
    more = np.repeat(np.arange(user.size), rng.poisson(baseline * span / _DAY))
    pair = np.r_[announced, more]
    t = np.r_[first[announced], first[more] + rng.random(more.size) * span[more]]
    immigrant = np.r_[np.zeros(announced.size, dtype=bool), np.ones(more.size, dtype=bool)]
    pairs, times, flags = [pair], [t], [immigrant]
    while pair.size:
        src = np.repeat(np.arange(pair.size), rng.poisson(eta[pair]))
        pair = pair[src]
        t = t[src] + rng.standard_exponential(src.size) / decay[pair] * _DAY
        alive = t < horizon[pair]
        pair, t = pair[alive], t[alive]
        pairs.append(pair)
        times.append(t)
        flags.append(np.zeros(pair.size, dtype=bool))
    pair, sec, immigrant = np.concatenate(pairs), np.concatenate(times), np.concatenate(flags)
    rows = world.draw_rows(rng, cat[pair])
    code = _draw_codes(rng, cfg.log.behavior_shares, pair.size)
    events = _rows(user[pair], np.floor(sec), code, item=world.item[rows], cat=cat[pair])
    n_events = np.bincount(pair, minlength=user.size).astype(np.int64)
    truth = _NewInterests(user, cat, searched, first, eta, baseline, n_events)
    return events, immigrant, truth


def _draw_codes(rng: np.random.Generator, shares: tuple[float, ...], size: int) -> np.ndarray:
    cum = np.cumsum(shares)
    cum[-1] = 1.0
    return np.minimum(np.searchsorted(cum, rng.random(size), side="right"), len(shares) - 1)


def _new_interests_table(world: _World, new: _NewInterests) -> pa.Table:
    return pa.table(
        {
            "user_id": world.user_ids.take(pa.array(new.user)),
            "category_id": world.category_ids.take(pa.array(new.cat)),
            "searched_at": new.searched,
            "first_event_at": new.first,
            "baseline_per_day": new.baseline,
            "branching_ratio": new.eta,
            "decay_per_day": world.decay[new.cat],
            "n_events": new.n_events,
        }
    )


@dataclass(frozen=True, slots=True)
class _Searches:
    rows: dict[str, np.ndarray]
    kind: np.ndarray  # index into _SEARCH_KINDS
    engaged: np.ndarray  # epoch s of the announced event, -1 for noise
    true_cat: np.ndarray

    def truth_table(self, world: _World, vocabulary: _Vocabulary) -> pa.Table:
        rows = self.rows
        order = np.lexsort((rows["sec"], rows["user"]))
        engaged = self.engaged[order]
        return pa.table(
            {
                "user_id": world.user_ids.take(pa.array(rows["user"][order])),
                "timestamp": rows["sec"][order],
                "query": vocabulary.texts.take(pa.array(rows["query"][order])),
                "category_id": world.category_ids.take(pa.array(self.true_cat[order])),
                "kind": pa.array(_SEARCH_KINDS).take(pa.array(self.kind[order])),
                "engaged_at": pa.array(engaged, pa.int64(), mask=engaged < 0),
            }
        )


def _searches(
    cfg: BehaviourConfig,
    world: _World,
    vocabulary: _Vocabulary,
    organic: dict[str, np.ndarray],
    immigrant: np.ndarray,
    new: _NewInterests,
    rng: np.random.Generator,
) -> _Searches:
    """Steps 3 and 4 (and the searches of step 2): every search, with what it announces."""
    burst = np.flatnonzero(immigrant & (rng.random(immigrant.size) < cfg.search_before_burst))
    lead = 30.0 + rng.exponential(cfg.search_lead_minutes * 60.0, burst.size)
    user = np.r_[organic["user"][burst], new.user]
    cat = np.r_[organic["cat"][burst], new.cat]
    engaged = np.r_[organic["sec"][burst], new.first]
    sec = np.r_[
        np.maximum(world.start, organic["sec"][burst] - lead.astype(np.int64)), new.searched
    ]
    kind = np.r_[np.zeros(burst.size, dtype=np.int64), np.ones(new.user.size, dtype=np.int64)]
    share = cfg.noise_search_share
    noisy = rng.random(user.size) < share / (1.0 - share)
    noise_user = user[noisy]
    span = world.horizon[noise_user] - world.start
    noise_sec = world.start + (rng.random(noise_user.size) * span).astype(np.int64)
    noise_cat = world.draw_categories(rng, noise_user.size, with_events=False)
    user, sec = np.r_[user, noise_user], np.r_[sec, noise_sec]
    cat, kind = np.r_[cat, noise_cat], np.r_[kind, np.full(noise_user.size, 2)]
    engaged = np.r_[engaged, np.full(noise_user.size, -1)]
    query = vocabulary.draw_queries(rng, cat)
    return _Searches(_rows(user, sec, _SEARCH, query=query), kind, engaged, cat)


@dataclass(frozen=True, slots=True)
class _Recommendations:
    organic: dict[str, np.ndarray]  # with buys after a click written as views
    impressions: dict[str, np.ndarray]
    clicks: dict[str, np.ndarray]
    buys: dict[str, np.ndarray]  # converted clicks
    buy_arm: np.ndarray
    arm: np.ndarray  # per user, index into ARMS

    def arms_table(self, cfg: BehaviourConfig) -> pa.Table:
        def per_arm(users: np.ndarray) -> np.ndarray:
            return np.bincount(self.arm[users], minlength=len(ARMS)).astype(np.int64)

        return pa.table(
            {
                "arm": list(ARMS),
                "share": [1.0 - cfg.treated_share, cfg.treated_share],
                "ctr": list(cfg.ctr),
                "conversion": list(cfg.conversion),
                "rating_shift": list(cfg.rating_shift),
                "placement": [cfg.placement] * len(ARMS),
                "attribution_window_s": [int(cfg.attribution_window.total_seconds())] * len(ARMS),
                "users": per_arm(np.arange(self.arm.size)),
                "impressions": per_arm(self.impressions["user"]),
                "clicks": per_arm(self.clicks["user"]),
                "conversions": per_arm(self.buys["user"]),
            }
        )

    def assignments_table(self, world: _World) -> pa.Table:
        def per_user(rows: dict[str, np.ndarray]) -> np.ndarray:
            return np.bincount(rows["user"], minlength=self.arm.size).astype(np.int64)

        clicks, conversions = per_user(self.clicks), per_user(self.buys)
        return pa.table(
            {
                "user_id": world.user_ids,
                "arm": pa.array(ARMS).take(pa.array(self.arm)),
                "impressions": per_user(self.impressions),
                "clicks": clicks,
                "conversions": conversions,
                "clicked": (clicks > 0).astype(np.int64),
                "converted": (conversions > 0).astype(np.int64),
            }
        )


def _recommendations(
    cfg: BehaviourConfig, world: _World, organic: dict[str, np.ndarray], rng: np.random.Generator
) -> _Recommendations:
    """Step 5: arms, impressions, clicks, converted buys; organic buys after a click become
    views so that the log's conversion is the drawn one."""
    arm = (rng.random(world.n_users) < cfg.treated_share).astype(np.int64)
    shown = np.flatnonzero(rng.random(organic["user"].size) < cfg.impression_prob)
    visit = np.repeat(shown, cfg.slate_size)
    user, sec = organic["user"][visit], organic["sec"][visit]
    row = _recommended_rows(world, rng, user, arm[user] == 1)
    item, cat = world.item[row], world.cat[row]
    # One impression per (user, second, item): a slate repeating an item (or two visits in
    # one second showing it) would be one row in any real log, and a duplicate in the store.
    _, once = np.unique(np.column_stack((user, sec, item)), axis=0, return_index=True)
    once = np.sort(once)
    user, sec, item, cat = user[once], sec[once], item[once], cat[once]
    impressions = _rows(user, sec, _IMPRESSION, item=item, cat=cat, placed=True)

    clicked = np.flatnonzero(rng.random(user.size) < np.asarray(cfg.ctr)[arm[user]])
    click_sec = (
        sec[clicked] + 2 + rng.exponential(_CLICK_DELAY_SECONDS, clicked.size).astype(np.int64)
    )
    c_user, c_item, c_cat = user[clicked], item[clicked], cat[clicked]
    clicks = _rows(c_user, click_sec, _CLICK, item=c_item, cat=c_cat, placed=True)

    window = int(cfg.attribution_window.total_seconds())
    converted = np.flatnonzero(rng.random(c_user.size) < np.asarray(cfg.conversion)[arm[c_user]])
    mean = _BUY_DELAY_HOURS * 3600.0
    # Exp(mean) truncated to (0, window] by its inverse CDF, then whole seconds in [1, window].
    u = rng.random(converted.size)
    delay = -mean * np.log1p(-u * -np.expm1(-window / mean))
    delay = np.clip(np.ceil(delay), 1, window).astype(np.int64)
    buys = _rows(
        c_user[converted],
        click_sec[converted] + delay,
        _BUY,
        item=c_item[converted],
        cat=c_cat[converted],
    )
    organic = _relabel_buys_after_clicks(organic, clicks, window)
    return _Recommendations(organic, impressions, clicks, buys, arm[c_user[converted]], arm)


def _recommended_rows(
    world: _World, rng: np.random.Generator, user: np.ndarray, personalised: np.ndarray
) -> np.ndarray:
    """The base row whose item each impression shows: by overall popularity, or from the
    user's interest categories (by baseline) for personalised users who have some."""
    row = (rng.random(user.size) * world.sec.size).astype(np.int64)  # control: any event
    cum = np.cumsum(world.interest_weight)
    first = np.searchsorted(world.interest_user, np.arange(world.n_users))
    last = np.searchsorted(world.interest_user, np.arange(world.n_users), side="right")
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    total = np.where(last > first, cum[np.maximum(last - 1, 0)], 0.0) - before
    mine = np.flatnonzero(personalised & (total[user] > 0))
    target = before[user[mine]] + rng.random(mine.size) * total[user[mine]]
    pair = np.clip(
        np.searchsorted(cum, target, side="right"), first[user[mine]], last[user[mine]] - 1
    )
    row[mine] = world.draw_rows(rng, world.interest_cat[pair])
    return row


def _relabel_buys_after_clicks(
    organic: dict[str, np.ndarray], clicks: dict[str, np.ndarray], window: int
) -> dict[str, np.ndarray]:
    """Write as views the organic buys of a clicked (user, item) within ``window`` seconds
    after the click (ties included), so that every such buy is a converted click's."""
    if clicks["user"].size == 0:
        return organic
    n_items = int(max(organic["item"].max(initial=0), clicks["item"].max(initial=0))) + 1
    click_key = clicks["user"] * n_items + clicks["item"]
    keys = np.unique(click_key)
    buy = np.flatnonzero(organic["code"] == _BUY)
    buy_key = organic["user"][buy] * n_items + organic["item"][buy]
    pos = np.clip(np.searchsorted(keys, buy_key), 0, keys.size - 1)
    buy = buy[keys[pos] == buy_key]
    dense_click = np.searchsorted(keys, click_key)
    dense_buy = np.searchsorted(keys, organic["user"][buy] * n_items + organic["item"][buy])
    shift = 1 << 40  # dense key * shift + seconds since the first second: sortable in int64
    t0 = min(int(clicks["sec"].min()), int(organic["sec"].min()))
    click_code = np.sort(dense_click * shift + (clicks["sec"] - t0))
    buy_code = dense_buy * shift + (organic["sec"][buy] - t0)
    latest = np.searchsorted(click_code, buy_code, side="right") - 1
    ok = latest >= 0
    last_click = click_code[np.maximum(latest, 0)]
    within = ok & (last_click // shift == dense_buy) & (buy_code - last_click <= window)
    code = organic["code"].copy()
    code[buy[within]] = _VIEW
    return {**organic, "code": code}


@dataclass(frozen=True, slots=True)
class _Ratings:
    rows: dict[str, np.ndarray]
    truth: pa.Table


def _ratings(
    cfg: BehaviourConfig, world: _World, recs: _Recommendations, rng: np.random.Generator
) -> _Ratings:
    """Step 6: a rating after some buys, from a per-category mean and an arm's shift."""
    n_cat = len(world.category_ids)
    latent = rng.uniform(*_RATING_MEAN_RANGE, size=n_cat)
    organic = recs.organic
    bought = np.flatnonzero(organic["code"] == _BUY)
    user = np.r_[organic["user"][bought], recs.buys["user"]]
    sec = np.r_[organic["sec"][bought], recs.buys["sec"]]
    item = np.r_[organic["item"][bought], recs.buys["item"]]
    cat = np.r_[organic["cat"][bought], recs.buys["cat"]]
    source = np.r_[np.zeros(bought.size, dtype=np.int64), 1 + recs.buy_arm]
    shift = np.r_[0.0, np.asarray(cfg.rating_shift)]
    rated = np.flatnonzero(rng.random(user.size) < cfg.rating_prob)
    at = sec[rated] + 60 + rng.exponential(_RATING_DELAY_DAYS * _DAY, rated.size).astype(np.int64)
    mean = latent[cat[rated]] + shift[source[rated]]
    value = np.clip(np.rint(mean + _RATING_SD * rng.standard_normal(rated.size)), 1.0, 5.0)
    keep = at < world.end
    rated, at, value = rated[keep], at[keep], value[keep]
    rows = _rows(user[rated], at, _RATE, item=item[rated], cat=cat[rated], value=value)

    cat_grid = np.repeat(np.arange(n_cat), len(_RATING_SOURCES))
    source_grid = np.tile(np.arange(len(_RATING_SOURCES)), n_cat)
    grid_mean = latent[cat_grid] + shift[source_grid]
    counts = np.bincount(
        cat[rated] * len(_RATING_SOURCES) + source[rated], minlength=cat_grid.size
    ).astype(np.int64)
    truth = pa.table(
        {
            "category_id": world.category_ids.take(pa.array(cat_grid)),
            "source": pa.array(_RATING_SOURCES).take(pa.array(source_grid)),
            "latent_mean": grid_mean,
            "sd": np.full(cat_grid.size, _RATING_SD),
            "expected_rating": _expected_rating(grid_mean, _RATING_SD),
            "n_ratings": counts,
        }
    )
    return _Ratings(rows, truth)


def _expected_rating(mean: np.ndarray, sd: float) -> np.ndarray:
    """Exact mean of ``clip(round(N(mean, sd²)), 1, 5)``: ``1 + Σ_{k=1..4} P(X > k + 1/2)``."""
    steps = np.arange(1, 5) + 0.5
    return 1.0 + ndtr((mean[:, None] - steps[None, :]) / sd).sum(axis=1)


def _events_table(
    world: _World, vocabulary: _Vocabulary, placement: str, rows: dict[str, np.ndarray]
) -> pa.Table:
    """Sort the rows (user, time, behaviour rank, generation order) into the output columns."""
    order = np.lexsort((_TIE_RANK[rows["code"]], rows["sec"], rows["user"]))
    r = {key: values[order] for key, values in rows.items()}

    def take(universe: pa.Array, index: np.ndarray) -> pa.Array:
        return universe.take(pa.array(index, pa.int64(), mask=index < 0))

    return pa.table(
        {
            "user_id": world.user_ids.take(pa.array(r["user"])),
            "item_id": take(world.item_ids, r["item"]),
            "category_id": take(world.category_ids, r["cat"]),
            "behavior": pa.array(_WORDS).take(pa.array(r["code"])),
            "timestamp": pa.array(r["sec"], pa.int64()),
            "query": take(vocabulary.texts, r["query"]),
            "value": pa.array(r["value"], pa.float64(), mask=np.isnan(r["value"])),
            "placement": pc.if_else(pa.array(r["placed"]), placement, pa.scalar(None, pa.string())),
        }
    )


def write_generic_csv(log: BehaviourLog, path: Path) -> int:
    """Write the events as a generic CSV that ``ebbtide ingest --format generic`` reads.

    Header ``user_id,item_id,category_id,behavior,timestamp,query,value,placement``;
    ``timestamp`` in epoch seconds; a missing value is an empty field; no quotes (no value
    holds a comma); gzip-compressed when ``path`` ends with ``.gz``. Same log, same bytes.

    Parameters
    ----------
    log : BehaviourLog
        What `generate_behaviours` returned.
    path : Path
        Output file; overwritten if it exists, parent folders created.

    Returns
    -------
    int
        Rows written.
    """
    write_plain_csv(log.events, path, header=True)
    return log.events.num_rows


_TRUTH_README = """
Searches, recommendations and ratings (ebbtide.synthetic_behaviours; process in its docstring).
The generic log's buys of a clicked item within the attribution window after the click are
the converted clicks'; organic ones there were written as views (base truth counts them).

query_categories.parquet, one row per distinct query:
  query, category_id (the true category), weight (probability of the phrasing when its
  category is searched), n_words, has_shared_word, n_searches (in the log)
query_words.parquet, one row per (word, category): word, category_id, shared
searches.parquet, one row per search: user_id, timestamp, query, category_id, kind
  (burst: before an immigrant event of the category; new_interest: before the first event of
  a category new to the user; noise: announces nothing), engaged_at (epoch s of the event
  announced; for new_interest it may lie past the window's end; null for noise)
new_interests.parquet: user_id, category_id, searched_at, first_event_at, baseline_per_day,
  branching_ratio, decay_per_day, n_events (a Hawkes process from first_event_at on)
arms.parquet, one row per arm: arm, share, ctr (true click prob per impression), conversion
  (true prob that a click is followed by a buy of its item within attribution_window_s),
  rating_shift, placement, attribution_window_s, users, impressions, clicks, conversions
assignments.csv, one row per user (a campaign log for `ebbtide campaign analyze
  assignments.csv --arm-col arm --control control --outcomes clicked,converted`):
  user_id, arm, impressions, clicks, conversions, clicked, converted
ratings.parquet, one row per (category, source): category_id, source (organic, or the arm of
  a converted click), latent_mean, sd (value = clip(round(N(latent_mean, sd^2)), 1, 5)),
  expected_rating (exact), n_ratings

config: {config!r}
"""


def write_behaviour_truth(log: BehaviourLog, directory: Path) -> list[Path]:
    """Write every truth table beside the log: the base log's (`write_truth`) and the new ones.

    Parameters
    ----------
    log : BehaviourLog
        What `generate_behaviours` returned.
    directory : Path
        Created if missing; the base files, ``query_categories.parquet``,
        ``query_words.parquet``, ``searches.parquet``, ``new_interests.parquet``,
        ``arms.parquet``, ``assignments.csv`` and ``ratings.parquet`` are (over)written there,
        and ``README.txt`` says what each column means.

    Returns
    -------
    list of Path
        The files written.
    """
    directory = Path(directory)
    written = write_truth(log.base, directory)
    for name, table in (
        ("query_categories", log.truth_queries),
        ("query_words", log.truth_words),
        ("searches", log.truth_searches),
        ("new_interests", log.truth_new_interests),
        ("arms", log.truth_arms),
        ("ratings", log.truth_ratings),
    ):
        path = directory / f"{name}.parquet"
        pq.write_table(table, path)
        written.append(path)
    assignments = directory / "assignments.csv"
    write_plain_csv(log.assignments, assignments, header=True)
    written.append(assignments)
    readme = directory / "README.txt"
    with readme.open("a", encoding="utf-8") as sink:
        sink.write(_TRUTH_README.format(config=log.config))
    return written
