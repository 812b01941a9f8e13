"""Synthetic e-commerce behaviour logs with known ground truth.

Why: decay models must be shown to recover parameters that are *known*, and the pipeline must be
run at tens of millions of events; no real log offers either. This module writes Taobao-shaped
logs (``user,item,category,behavior,ts``) whose interest dynamics are a documented point process,
and hands back the true parameters next to the events.

Generative process
------------------
Time ``t`` is in days since ``start``; the window is ``[0, T)``, ``T = days``. Three features
are off by default (the session kernel, the cycle and fading; steps 3b, 5b and 5c): with them
off, the output is byte for byte what it was before they existed.

1. **Categories** ``c = 0..C-1`` have Zipf popularity ``p_c ∝ (c + 1)^-category_zipf``, a decay
   rate ``δ_c = ln 2 / h_c`` with half-life ``h_c`` log-uniform on ``half_life_days``, and ``n_c``
   items (lognormal around ``items_per_category``) with Zipf popularity ``∝ rank^-item_zipf``.
   With the session kernel on, also a session decay ``δ^s_c = ln 2 / h^s_c``, ``h^s_c``
   log-uniform on ``session_half_life_hours`` (converted to days).
2. **Users**: activity ``a_u = A·exp(σZ − σ²/2)`` (lognormal, mean ``A``, ``σ = activity_sigma``);
   ``K_u = min(C, 1 + Poisson(interests_mean − 1))`` distinct interest categories drawn by
   popularity without replacement; weights ``w_u ~ Dirichlet(interest_concentration)``.
3. **Interests**: each pair ``(u, c)`` is a Hawkes process with exponential kernel, started
   empty at ``t = 0`` (no history before the window, so the window's own likelihood is exact)::

       λ_uc(t) = μ_uc + Σ_{j: t_j < t} α_uc · exp(−δ_c (t − t_j)),   α_uc = η_uc · δ_c,

   with branching ratio ``η_uc ~ U(branching_range)``. ``μ_uc`` is solved from
   ``E N_uc[0, T) = μ_uc · G = a_u · w_uc · T`` where
   ``G = T/(1 − η) − η/((1 − η)² δ) · (1 − exp(−(1 − η) δ T))``; so ``a_u`` is the user's expected
   events per day over the window, had the user never gone dormant (nor faded).

   3b. **Two time scales** (``session_branching_range`` above ``(0, 0)``): the kernel gains a
   short *session* term, ``+ Σ_j η^s_uc δ^s_c exp(−δ^s_c (t − t_j))`` with
   ``η^s_uc ~ U(session_branching_range)``; ``η_uc + η^s_uc <= 0.99``. ``G`` is then the exact
   expected count of the two-kernel process from an empty start (closed form of the 2x2 linear
   ODE of the mean intensity; see `_expected_count`), so the expected events per pair are
   still ``a_u · w_uc · T``.
4. **Dormancy**: with probability ``dormant_share`` user ``u`` goes quiet at
   ``D_u ~ Exp(mean dormancy_mean_days)``; events at ``t ≥ D_u`` are removed.
   ``A = events_per_user_day / ρ``, ``ρ = E[min(D, T)] / T``, so that the realised volume is about
   ``users · days · events_per_user_day`` (a few per cent less: rates ramp up from the empty start,
   so dormancy removes slightly more than its share of time).
5. **Simulation** (branching representation, vectorised one generation at a time): immigrants
   ``~ Poisson(μ_uc · min(T, D_u))`` uniform on ``[0, min(T, D_u))``; every event spawns
   ``Poisson(η_uc)`` children at delays ``~ Exp(rate δ_c)`` and, with the session kernel,
   ``Poisson(η^s_uc)`` children at delays ``~ Exp(rate δ^s_c)``; children at or past
   ``min(T, D_u)`` are dropped; repeat until a generation is empty. Clusters are finite because
   the total branching is below 1.

   5b. **Daily and weekly cycle** (``daily_amplitude`` or ``weekly_amplitude`` above 0): every
   intensity, baseline and excitation alike, is multiplied by
   ``g(t) = (1 + A_d cos(2π(h(t) − peak_hour)/24)) · (1 + A_w cos(2π(dow(t) + h(t)/24 −
   peak_day)/7)) / m``, ``h`` the local hour and ``dow`` the local weekday (Monday = 0) in
   ``time_zone`` at its UTC offset *at* ``start``, fixed for the whole window (no daylight-saving
   shifts). ``m``, the mean of the product over a week, is computed numerically; it is 1 up to
   rounding (with a fixed offset the daily cosine is the 7th harmonic of the week, orthogonal to
   the weekly one), so ``g`` averages 1 over any whole week. This is done as a time change: the
   whole process of step 5 is simulated in *operational time* ``s = Φ(t) = ∫_0^t g`` on the
   window ``[0, Φ(T))`` (and ``[0, Φ(D_u))`` for dormant users), then every event is mapped back
   with ``t = Φ⁻¹(s)`` (closed-form ``Φ``, Newton inversion exact to ~1e-9 days). ``G`` of step 3
   is taken at ``Φ(T)``, so the expected volume is unchanged. Decays act in operational time:
   half-lives and rates in the truth are in *operational* days, which equal calendar days on
   average over a week (``g`` has mean 1), not hour by hour.

   5c. **Fading** (``fading_share`` above 0): that share of users (own random stream) gets
   ``F_u ~ U(fading_window) · T``; every event of such a user born at ``t ≥ F_u``, immigrant or
   child, is kept with probability ``fading_factor = f`` *at birth*, and only kept events have
   children. Thinning at birth is exact: after ``F_u`` the user's pairs are Hawkes processes
   with ``μ`` and ``η`` (both kernels) multiplied by ``f``, i.e. every intensity is multiplied by
   ``f``. (Deleting events after branching would not be: the children of deleted events would
   stay.) The settled rate therefore falls to ``f (1 − η_tot)/(1 − f η_tot)`` of its level
   before, which is ``f`` only without self-excitation. ``a_u`` and the expected volume ignore
   fading: fading users produce fewer events than ``a_u`` says.
6. **Marks**: a child re-uses its parent's item with probability ``repeat_prob`` (repeat
   consumption), otherwise it draws an item of its category by popularity; immigrants always draw.
   Behaviours are i.i.d. with ``behavior_shares`` (view, cart, fav, buy), written as the Taobao
   words ``pv``, ``cart``, ``fav``, ``buy``.
7. **Output**: times are floored to integer epoch seconds; rows are sorted by ``user_id`` in
   *string* order (as in the Taobao file: "1", "10", "100", ...) and then by time.

Randomness comes only from ``np.random.default_rng`` streams spawned from ``seed``: one for the
categories and, per block of users, separate streams for users, timing and marks, so the same
seed gives byte-identical output, and changing, say, ``behavior_shares`` leaves times unchanged.
The session kernel (category half-lives; per block ``η^s`` and session children) and fading
(who, when, and the thinning) draw from streams of their own, spawned after the others, so
turning them on leaves the categories and the users (activity, dormancy, interests, η) as they
were; the events differ, as the process does. The cycle draws nothing.

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
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ebbtide.errors import ConfigError
from ebbtide.schema import ITEM_BEHAVIORS, Behavior

__all__ = [
    "TAOBAO_BEHAVIOR_WORDS",
    "SynthConfig",
    "SyntheticLog",
    "generate",
    "order_log_config",
    "recovery_config",
    "two_scale_config",
    "write_order_csv",
    "write_plain_csv",
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
    session_half_life_hours : tuple[float, float]
        Range of the per-category *session* half-lives ``ln 2 / δ^s_c`` (log-uniform), in
        hours; used only when the session kernel is on.
    session_branching_range : tuple[float, float]
        Range of the session branching ratio ``η^s`` (uniform). ``(0, 0)`` (the default) turns
        the session kernel off; otherwise ``branching_range[1] + session_branching_range[1]``
        must be at most 0.99 (total branching below 1 keeps clusters finite).
    daily_amplitude : float
        ``A_d`` in ``[0, 1)``, amplitude of the time-of-day cycle of every intensity; 0 (the
        default) together with ``weekly_amplitude = 0`` turns the cycle off.
    peak_hour : float
        Local hour ``[0, 24)`` at which the daily cycle peaks (default 21.0, 9 pm).
    weekly_amplitude : float
        ``A_w`` in ``[0, 1)``, amplitude of the day-of-week cycle (default 0).
    peak_day : float
        Local day of the week ``[0, 7)`` at which the weekly cycle peaks, Monday 00:00 = 0,
        fractions allowed (default 6.0: Sunday 00:00, the middle of the weekend).
    time_zone : str
        IANA name of the zone whose clock the cycle follows (default ``"Asia/Shanghai"``); its
        UTC offset *at* ``start`` is used for the whole window (no daylight-saving shifts).
    fading_share : float
        Share of users whose interest fades (default 0 = nobody): from a time ``F_u`` on,
        every intensity of the user is multiplied by ``fading_factor``.
    fading_window : tuple[float, float]
        Range of ``F_u`` as fractions of ``days`` (uniform; default ``(0.6, 0.9)``).
    fading_factor : float
        Factor in ``[0, 1]`` on a fading user's baseline and excitation after ``F_u``
        (default 0.2).
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
    session_half_life_hours: tuple[float, float] = (0.2, 2.0)
    session_branching_range: tuple[float, float] = (0.0, 0.0)
    daily_amplitude: float = 0.0
    peak_hour: float = 21.0
    weekly_amplitude: float = 0.0
    peak_day: float = 6.0
    time_zone: str = "Asia/Shanghai"
    fading_share: float = 0.0
    fading_window: tuple[float, float] = (0.6, 0.9)
    fading_factor: float = 0.2

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
        _check_range("half_life_days", self.half_life_days, 1e-4, 1e4)
        _check_range("branching_range", self.branching_range, 0.0, 0.99)
        _check_real("dormant_share", self.dormant_share, 0.0, 1.0)
        _check_real("dormancy_mean_days", self.dormancy_mean_days, 0.0, 1e6, low_open=True)
        _check_real("repeat_prob", self.repeat_prob, 0.0, 1.0)
        shares = self.behavior_shares
        if (
            not isinstance(shares, tuple)
            or len(shares) != len(ITEM_BEHAVIORS)
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
        _check_range("session_half_life_hours", self.session_half_life_hours, 1e-3, 1e5)
        _check_range("session_branching_range", self.session_branching_range, 0.0, 0.99)
        total = self.branching_range[1] + self.session_branching_range[1]
        if total > 0.99:
            raise _fail(
                "session_branching_range",
                self.session_branching_range,
                f"a (low, high) tuple with branching_range high + high <= 0.99 (total branching"
                f" must stay below 1; now {self.branching_range[1]:g} + "
                f"{self.session_branching_range[1]:g} = {total:g})",
            )
        _check_real("daily_amplitude", self.daily_amplitude, 0.0, 1.0, high_open=True)
        _check_real("peak_hour", self.peak_hour, 0.0, 24.0, high_open=True)
        _check_real("weekly_amplitude", self.weekly_amplitude, 0.0, 1.0, high_open=True)
        _check_real("peak_day", self.peak_day, 0.0, 7.0, high_open=True)
        _utc_offset_hours(self.time_zone, self.start)  # raises on an unknown zone
        _check_real("fading_share", self.fading_share, 0.0, 1.0)
        _check_range("fading_window", self.fading_window, 0.0, 1.0)
        _check_real("fading_factor", self.fading_factor, 0.0, 1.0)

    @property
    def has_session(self) -> bool:
        """Whether the session kernel is on (``session_branching_range[1] > 0``)."""
        return self.session_branching_range[1] > 0.0

    @property
    def has_cycle(self) -> bool:
        """Whether the daily/weekly cycle is on (either amplitude above 0)."""
        return self.daily_amplitude > 0.0 or self.weekly_amplitude > 0.0

    @property
    def has_fading(self) -> bool:
        """Whether some users fade (``fading_share > 0``)."""
        return self.fading_share > 0.0

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


def two_scale_config(users: int = 1000, seed: int = 2, **overrides: object) -> SynthConfig:
    """The log the main model's recovery is measured on: two time scales, a daily and a
    weekly cycle (benches and tests share it).

    20 days, 30 categories, about 10 events per user-day, nobody dormant; per category an
    interest kernel (half-life 1 to 10 days, branching 0.3 to 0.5) and a session kernel
    (half-life 0.2 to 2 hours, branching 0.3 to 0.4); a daily cycle of amplitude 0.6 peaking
    at 21:00 and a weekly one of amplitude 0.2, on China time. Any `SynthConfig` field can be
    overridden, e.g. ``two_scale_config(fading_share=0.2)`` for users whose interest fades.
    """
    fields: dict[str, object] = {
        "users": users,
        "seed": seed,
        "days": 20.0,
        "categories": 30,
        "events_per_user_day": 10.0,
        "dormant_share": 0.0,
        "half_life_days": (1.0, 10.0),
        "branching_range": (0.3, 0.5),
        "session_half_life_hours": (0.2, 2.0),
        "session_branching_range": (0.3, 0.4),
        "daily_amplitude": 0.6,
        "peak_hour": 21.0,
        "weekly_amplitude": 0.2,
        "time_zone": "Asia/Shanghai",
    }
    fields.update(overrides)
    return SynthConfig(**fields)  # type: ignore[arg-type]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_real(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    ok = _is_real(value) and math.isfinite(value)  # type: ignore[arg-type]
    ok = ok and (value > low if low_open else value >= low)  # type: ignore[operator]
    ok = ok and (value < high if high_open else value <= high)  # type: ignore[operator]
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise _fail(name, value, f"a number in {left}{low:g}, {high:g}{right}")


def _utc_offset_hours(name: object, start: datetime) -> float:
    """UTC offset of IANA zone ``name`` at ``start``, in hours; a `ConfigError` if unknown."""
    allowed = "an IANA time zone name such as 'Asia/Shanghai', 'Europe/Berlin' or 'UTC'"
    if not isinstance(name, str) or not name:
        raise _fail("time_zone", name, allowed)
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise _fail("time_zone", name, allowed) from None
    offset = start.astimezone(zone).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset.total_seconds() / 3600.0


def _check_range(name: str, value: object, low: float, high: float) -> None:
    allowed = f"a (low, high) tuple with {low:g} <= low <= high <= {high:g}"
    if not isinstance(value, tuple) or len(value) != 2:
        raise _fail(name, value, allowed)
    lo, hi = value
    if not (_is_real(lo) and _is_real(hi) and low <= lo <= hi <= high):
        raise _fail(name, value, allowed)


class _Cycle:
    """The daily and weekly cycle ``g`` and the time change ``Φ(t) = ∫_0^t g`` (days).

    ``raw(t) = (1 + A_d cos(2π(h(t) − peak_hour)/24)) · (1 + A_w cos(2π(dow(t) + h(t)/24 −
    peak_day)/7))`` with the local clock at a fixed UTC offset; ``g = raw / m`` where ``m`` is
    the mean of ``raw`` over one week, computed numerically. (With a fixed offset the daily
    cosine is the 7th harmonic of the week and ``m`` is 1 up to rounding; dividing by it makes
    ``g`` average exactly 1 over any whole week whatever the construction.) ``Φ`` is a sum of
    sines in closed form; ``Φ⁻¹`` is a safeguarded Newton iteration started from a 15-minute
    grid, accurate to about 1e-9 days (0.1 ms).
    """

    _GRID_STEP = 1.0 / 96.0

    def __init__(self, cfg: SynthConfig) -> None:
        self.offset_hours = _utc_offset_hours(cfg.time_zone, cfg.start)
        local_sec = _epoch_seconds(cfg.start) + round(self.offset_hours * 3600)
        # Phases in days: the daily cosine's argument is 2π(t + d0), the weekly one's 2π(t + w0)/7.
        d0 = (local_sec % _SECONDS_PER_DAY) / _SECONDS_PER_DAY - cfg.peak_hour / 24.0
        # 1970-01-01 was a Thursday: Monday 00:00 local is 3 days before it, modulo a week.
        w0 = ((local_sec + 3 * _SECONDS_PER_DAY) % (7 * _SECONDS_PER_DAY)) / _SECONDS_PER_DAY
        w0 -= cfg.peak_day
        a_d, a_w = float(cfg.daily_amplitude), float(cfg.weekly_amplitude)
        wd, ww = 2.0 * math.pi, 2.0 * math.pi / 7.0
        # raw = 1 + Σ coef · cos(ω t + φ): the product's four cosines.
        self._terms = [
            (a_d, wd, wd * d0),
            (a_w, ww, ww * w0),
            (a_d * a_w / 2.0, wd + ww, wd * d0 + ww * w0),
            (a_d * a_w / 2.0, wd - ww, wd * d0 - ww * w0),
        ]
        week = (np.arange(7 * 1440) + 0.5) / 1440.0  # one-minute midpoints over a week
        self.norm = float(np.mean(self.raw(week)))
        self._grid_t = np.arange(0.0, cfg.days + 2 * self._GRID_STEP, self._GRID_STEP)
        self._grid_phi = self.phi(self._grid_t)

    def raw(self, t: np.ndarray) -> np.ndarray:
        out = np.ones_like(t, dtype=np.float64)
        for coef, omega, phase in self._terms:
            out += coef * np.cos(omega * t + phase)
        return out

    def g(self, t: np.ndarray) -> np.ndarray:
        """The intensity multiplier at calendar time ``t`` (days since start); mean 1."""
        return self.raw(t) / self.norm

    def phi(self, t: np.ndarray) -> np.ndarray:
        """Operational time ``Φ(t) = ∫_0^t g``."""
        t = np.asarray(t, dtype=np.float64)
        out = t.copy()
        for coef, omega, phase in self._terms:
            out += coef * (np.sin(omega * t + phase) - math.sin(phase)) / omega
        return out / self.norm

    def phi_inv(self, s: np.ndarray) -> np.ndarray:
        """Calendar time ``t`` with ``Φ(t) = s``, for ``0 <= s <= Φ(days)``."""
        s = np.asarray(s, dtype=np.float64)
        grid_t, grid_phi = self._grid_t, self._grid_phi
        k = np.clip(np.searchsorted(grid_phi, s, side="right") - 1, 0, grid_t.size - 2)
        lo, hi = grid_t[k], grid_t[k + 1]
        t = lo + (s - grid_phi[k]) / (grid_phi[k + 1] - grid_phi[k]) * (hi - lo)
        for _ in range(100):
            f = self.phi(t) - s
            if s.size == 0 or np.max(np.abs(f)) < 1e-10:
                break
            lo = np.where(f < 0, t, lo)
            hi = np.where(f > 0, t, hi)
            step = t - f / self.g(t)
            t = np.where((step > lo) & (step < hi), step, 0.5 * (lo + hi))
        return t


def _expected_count(
    eta: np.ndarray, decay: np.ndarray, eta_s: np.ndarray, decay_s: np.ndarray, t: float
) -> np.ndarray:
    """``G = E N[0, t) / μ`` of a Hawkes process started empty with kernel
    ``η δ e^(−δτ) + η_s δ_s e^(−δ_s τ)`` (exact).

    The mean intensity solves a 2x2 linear ODE; by Laplace transform
    ``E N(t)/μ = L⁻¹[(p + δ)(p + δ_s) / (p² (p + r₁)(p + r₂))](t)`` where ``−r₁, −r₂`` are the
    (real, negative) roots of ``(p + δ)(p + δ_s) − ηδ(p + δ_s) − η_sδ_s(p + δ)``. Partial
    fractions give ``G = t/(1 − η − η_s) + (h(r₂) − h(r₁))/(r₂ − r₁)`` with
    ``h(r) = (δ − r)(δ_s − r)(1 − e^(−rt))/r²``; when ``r₁ ≈ r₂`` the divided difference is
    ``h'``. With ``η_s = 0`` this is the one-kernel ``G`` of the module docstring.
    """
    a = decay * (1.0 - eta) + decay_s * (1.0 - eta_s)
    b = decay * decay_s * (1.0 - eta - eta_s)
    gap = np.sqrt(
        (decay * (1.0 - eta) - decay_s * (1.0 - eta_s)) ** 2 + 4 * eta * eta_s * decay * decay_s
    )
    r2 = 0.5 * (a + gap)
    r1 = b / r2

    def h(r: np.ndarray) -> np.ndarray:
        return (decay - r) * (decay_s - r) * -np.expm1(-r * t) / r**2

    def dh(r: np.ndarray) -> np.ndarray:
        n, dn = (decay - r) * (decay_s - r), 2.0 * r - decay - decay_s
        e, de = -np.expm1(-r * t), t * np.exp(-r * t)
        return (dn * e + n * de) / r**2 - 2.0 * n * e / r**3

    close = gap < 1e-6 * r2
    diff = np.where(close, dh(0.5 * (r1 + r2)), (h(r2) - h(r1)) / np.where(close, 1.0, gap))
    return t / (1.0 - eta - eta_s) + diff


@dataclass(frozen=True)
class SyntheticLog:
    """A synthetic event log and the true parameters that produced it.

    Attributes
    ----------
    events : pyarrow.Table
        ``user_id``, ``item_id``, ``category_id`` (strings), ``behavior`` (``pv|cart|fav|buy``),
        ``ts`` (int64 epoch seconds); sorted by ``user_id`` (string order) then ``ts``.
        With ``keep_lineage`` also ``parent_row`` (int64 row of the triggering event, or null)
        and ``kernel`` (int8: 0 = spawned by the interest kernel, 1 = by the session kernel,
        null for immigrants).
    truth_categories : pyarrow.Table
        ``category_id``, ``decay_per_day`` (δ), ``half_life_days``, ``popularity``, ``n_items``,
        ``n_events``; with the session kernel on also ``session_decay_per_day`` (δ^s) and
        ``session_half_life_days`` (columns absent when it is off).
    truth_interests : pyarrow.Table
        ``user_id``, ``category_id``, ``baseline_per_day`` (μ), ``excitation_per_day`` (α),
        ``decay_per_day`` (δ), ``half_life_days``, ``branching_ratio`` (η), ``n_events``; with
        the session kernel on also ``session_excitation_per_day`` (α^s = η^s δ^s),
        ``session_decay_per_day``, ``session_half_life_days``, ``session_branching_ratio``
        (η^s). With the cycle on, rates and half-lives are in operational days.
    truth_users : pyarrow.Table
        ``user_id``, ``activity_per_day`` (a), ``dormant_at_ts`` (int64 epoch s, null = not
        within the window; every event has ``ts < dormant_at_ts``), ``n_interests``, ``n_events``;
        with ``fading_share > 0`` also ``fading`` (bool) and ``fades_at_days`` (``F_u`` in
        calendar days since start, NaN for users who do not fade).
    config : SynthConfig
        The config that generated it.
    truth_cycle : pyarrow.Table or None
        With the cycle on, one row: ``daily_amplitude``, ``peak_hour``, ``weekly_amplitude``,
        ``peak_day``, ``time_zone``, ``utc_offset_hours`` (the zone's offset at ``start``, used
        throughout), ``weekly_mean_of_product`` (the normaliser of ``g``, 1 up to rounding) and
        ``operational_days`` (``Φ(T)``); None when the cycle is off.
    """

    events: pa.Table
    truth_categories: pa.Table
    truth_interests: pa.Table
    truth_users: pa.Table
    config: SynthConfig = field(default_factory=SynthConfig)
    truth_cycle: pa.Table | None = None


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
    session_decay: np.ndarray | None = None  # δ^s_c per day, None when the kernel is off


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
    (ss_session_catalog,) = root.spawn(1)  # spawned after: the first two are unchanged
    catalog = _make_catalog(cfg, np.random.default_rng(ss_catalog))
    if cfg.has_session:
        catalog = _with_session_decay(cfg, catalog, np.random.default_rng(ss_session_catalog))
    cycle = _Cycle(cfg) if cfg.has_cycle else None

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
        # The new features' own streams, spawned after the first three so those stay put.
        ss_session, ss_fading = block_seeds[b].spawn(2)
        streams = _Streams(
            users=np.random.default_rng(ss_users),
            sim=np.random.default_rng(ss_sim),
            marks=np.random.default_rng(ss_marks),
            session=np.random.default_rng(ss_session),
            fading=np.random.default_rng(ss_fading),
        )
        users, pairs = _draw_users(cfg, catalog, n_users, window_sec, streams, cycle)
        ev = _simulate(cfg, catalog, users, pairs, streams, cycle)
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
        truth_cycle=None if cycle is None else _cycle_table(cfg, cycle),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Streams:
    """The random streams of one block of users."""

    users: np.random.Generator  # activity, dormancy, interests, η
    sim: np.random.Generator  # immigrants and interest-kernel children
    marks: np.random.Generator  # items and behaviours
    session: np.random.Generator  # η^s and session-kernel children
    fading: np.random.Generator  # who fades, when, and the thinning


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


def _with_session_decay(cfg: SynthConfig, catalog: _Catalog, rng: np.random.Generator) -> _Catalog:
    """The catalogue plus per-category session decay rates, log-uniform half-lives in hours."""
    n_cat = cfg.categories
    lo, hi = (math.log(h / 24.0) for h in cfg.session_half_life_hours)
    half_life = np.exp(rng.uniform(lo, hi, n_cat)) if hi > lo else np.full(n_cat, math.exp(lo))
    return replace(catalog, session_decay=math.log(2.0) / half_life)


def _active_fraction(cfg: SynthConfig) -> float:
    """ρ = E[min(D, T)] / T for the dormancy mixture: the share of the window users are active."""
    m, t = cfg.dormancy_mean_days, cfg.days
    return (1.0 - cfg.dormant_share) + cfg.dormant_share * (m / t) * -math.expm1(-t / m)


def _draw_users(
    cfg: SynthConfig,
    catalog: _Catalog,
    n: int,
    window_sec: int,
    streams: _Streams,
    cycle: _Cycle | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Draw one block of users: activity, dormancy, interests and their Hawkes parameters."""
    rng = streams.users
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
    # The process runs in operational time: the window [0, T) is [0, Φ(T)) there.
    t_op = t if cycle is None else float(cycle.phi(np.array([t]))[0])
    pairs = {"user": pair_user, "cat": pair_cat, "eta": eta, "decay": decay}
    if catalog.session_decay is None:
        # Expected count of a Hawkes process started empty on [0, T), per unit of μ.
        x = (1.0 - eta) * decay * t_op
        g = t_op / (1.0 - eta) - eta / ((1.0 - eta) ** 2 * decay) * -np.expm1(-x)
    else:
        pairs["session_eta"] = streams.session.uniform(
            *cfg.session_branching_range, size=pair_user.size
        )
        pairs["session_decay"] = catalog.session_decay[pair_cat]
        g = _expected_count(eta, decay, pairs["session_eta"], pairs["session_decay"], t_op)
    pairs["baseline"] = activity[pair_user] * weight * t / g
    users = {
        "activity": activity,
        "dormant": dormant,
        "cutoff_sec": cutoff_sec,
        "n_interests": k.astype(np.int64),
    }
    if cfg.has_fading:
        users["fading"] = streams.fading.random(n) < cfg.fading_share
        fades_at = streams.fading.uniform(*cfg.fading_window, size=n) * t
        users["fades_at"] = np.where(users["fading"], fades_at, np.nan)
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
    streams: _Streams,
    cycle: _Cycle | None,
) -> dict[str, np.ndarray]:
    """Simulate all Hawkes processes of a block, generation by generation, in operational time.

    Returns the kept events (in generation order) as arrays: ``pair``, ``sec`` (seconds since
    start), ``item``, ``code`` (behaviour code), ``parent`` (index into these arrays, -1 for
    immigrants) and ``kernel`` (-1 immigrant, 0 interest child, 1 session child).
    """
    rng, rng_marks = streams.sim, streams.marks
    pair_cut_sec = users["cutoff_sec"][pairs["user"]]
    pair_cut = pair_cut_sec / _SECONDS_PER_DAY
    horizon = pair_cut if cycle is None else cycle.phi(pair_cut)  # end in operational time
    pair_cat, eta, decay = pairs["cat"], pairs["eta"], pairs["decay"]
    session_eta, session_decay = pairs.get("session_eta"), pairs.get("session_decay")
    fade_at: np.ndarray | None = None  # operational time of F_u per pair, inf if never
    if cfg.has_fading:
        fades = users["fades_at"][pairs["user"]]
        fade_at = np.full(fades.size, np.inf)
        fading = ~np.isnan(fades)
        fade_at[fading] = fades[fading] if cycle is None else cycle.phi(fades[fading])

    def thin(pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Which newborn events a fading user keeps: each at or past F_u with prob. f."""
        assert fade_at is not None
        keep = np.ones(pair.size, dtype=bool)
        late = np.flatnonzero(t >= fade_at[pair])
        keep[late] = streams.fading.random(late.size) < cfg.fading_factor
        return keep

    n0 = rng.poisson(pairs["baseline"] * horizon)
    pair = np.repeat(np.arange(n0.size, dtype=np.int64), n0)
    t = rng.random(pair.size) * horizon[pair]
    if fade_at is not None:
        kept = thin(pair, t)
        pair, t = pair[kept], t[kept]
    item = _draw_items(rng_marks, pair_cat[pair], catalog, cfg.item_zipf)
    parent = np.full(pair.size, -1, dtype=np.int64)
    kernel = np.full(pair.size, -1, dtype=np.int8)
    parts: list[tuple[np.ndarray, ...]] = []
    offset = 0
    while pair.size:
        parts.append((pair, t, item, parent, kernel))
        children = rng.poisson(eta[pair])
        src = np.repeat(np.arange(pair.size, dtype=np.int64), children)
        child_pair = pair[src]
        child_t = t[src] + rng.standard_exponential(src.size) / decay[child_pair]
        alive = child_t < horizon[child_pair]
        src, child_pair, child_t = src[alive], child_pair[alive], child_t[alive]
        child_kernel = np.zeros(src.size, dtype=np.int8)
        if session_eta is not None and session_decay is not None:
            rng_s = streams.session
            s_src = np.repeat(
                np.arange(pair.size, dtype=np.int64), rng_s.poisson(session_eta[pair])
            )
            s_pair = pair[s_src]
            s_t = t[s_src] + rng_s.standard_exponential(s_src.size) / session_decay[s_pair]
            s_alive = s_t < horizon[s_pair]
            src = np.concatenate([src, s_src[s_alive]])
            child_pair = np.concatenate([child_pair, s_pair[s_alive]])
            child_t = np.concatenate([child_t, s_t[s_alive]])
            child_kernel = np.concatenate([child_kernel, np.ones(s_alive.sum(), dtype=np.int8)])
        if fade_at is not None:
            kept = thin(child_pair, child_t)
            src, child_pair, child_t = src[kept], child_pair[kept], child_t[kept]
            child_kernel = child_kernel[kept]
        child_item = item[src]
        fresh = rng_marks.random(src.size) >= cfg.repeat_prob
        child_item[fresh] = _draw_items(
            rng_marks, pair_cat[child_pair[fresh]], catalog, cfg.item_zipf
        )
        parent = src + offset
        offset += pair.size
        pair, t, item, kernel = child_pair, child_t, child_item, child_kernel

    if parts:
        pair, t, item, parent, kernel = (np.concatenate(cols) for cols in zip(*parts, strict=True))
        if cycle is not None:
            t = cycle.phi_inv(t)  # back to calendar time
            # Φ⁻¹ is exact to ~1e-9 days only: never let a child precede its parent.
            first = 0
            for part in parts:
                rows = slice(first, first + part[0].size)
                is_child = parent[rows] >= 0
                t[rows][is_child] = np.maximum(t[rows][is_child], t[parent[rows][is_child]])
                first += part[0].size
    sec = (t * _SECONDS_PER_DAY).astype(np.int64)  # t >= 0: truncation is floor
    # Float rounding may put an event on the cutoff second; drop it (its children are later).
    keep = sec < pair_cut_sec[pair]
    if not keep.all():
        new_index = np.cumsum(keep) - 1
        pair, sec, item, parent = pair[keep], sec[keep], item[keep], parent[keep]
        kernel = kernel[keep]
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
        kernel = np.where(np.arange(rows.size) < kernel.size, kernel[rows], -1).astype(np.int8)
    return {
        "pair": pair,
        "sec": sec,
        "item": item,
        "code": code.astype(np.int8),
        "parent": parent,
        "kernel": kernel,
    }


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
        cols.append(pa.field("kernel", pa.int8()))
    return pa.schema(cols)


_BEHAVIOR_WORDS = pa.array([TAOBAO_BEHAVIOR_WORDS[b] for b in ITEM_BEHAVIORS], pa.string())


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
        cols.append(pa.array(ev["kernel"][order], pa.int8(), mask=~is_child))
    return pa.RecordBatch.from_arrays(cols, schema=_events_schema(cfg))


def _categories_table(catalog: _Catalog, n_events: np.ndarray) -> pa.Table:
    columns = {
        "category_id": catalog.category_ids,
        "decay_per_day": catalog.decay,
        "half_life_days": math.log(2.0) / catalog.decay,
        "popularity": catalog.popularity,
        "n_items": catalog.n_items,
        "n_events": n_events,
    }
    if catalog.session_decay is not None:
        columns["session_decay_per_day"] = catalog.session_decay
        columns["session_half_life_days"] = math.log(2.0) / catalog.session_decay
    return pa.table(columns)


def _interests_table(
    catalog: _Catalog, user_ids: pa.Array, parts: list[dict[str, np.ndarray]]
) -> pa.Table:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in parts])

    decay = cat("decay")
    eta = cat("eta")
    columns = {
        "user_id": user_ids.take(pa.array(cat("user_global"))),
        "category_id": catalog.category_ids.take(pa.array(cat("cat"))),
        "baseline_per_day": cat("baseline"),
        "excitation_per_day": eta * decay,
        "decay_per_day": decay,
        "half_life_days": math.log(2.0) / decay,
        "branching_ratio": eta,
        "n_events": cat("n_events").astype(np.int64),
    }
    if catalog.session_decay is not None:
        session_decay, session_eta = cat("session_decay"), cat("session_eta")
        columns["session_excitation_per_day"] = session_eta * session_decay
        columns["session_decay_per_day"] = session_decay
        columns["session_half_life_days"] = math.log(2.0) / session_decay
        columns["session_branching_ratio"] = session_eta
    return pa.table(columns)


def _users_table(
    user_ids: pa.Array, parts: list[dict[str, np.ndarray]], start_epoch: int
) -> pa.Table:
    def cat(name: str) -> np.ndarray:
        return np.concatenate([p[name] for p in parts])

    dormant = cat("dormant")
    columns = {
        "user_id": user_ids,
        "activity_per_day": cat("activity"),
        "dormant_at_ts": pa.array(cat("cutoff_sec") + start_epoch, pa.int64(), mask=~dormant),
        "n_interests": cat("n_interests"),
        "n_events": cat("n_events"),
    }
    if "fading" in parts[0]:
        columns["fading"] = cat("fading")
        columns["fades_at_days"] = cat("fades_at")
    return pa.table(columns)


def _cycle_table(cfg: SynthConfig, cycle: _Cycle) -> pa.Table:
    """One row: the cycle's parameters, the zone's fixed offset and the normaliser."""
    t_op = float(cycle.phi(np.array([cfg.days]))[0])
    return pa.table(
        {
            "daily_amplitude": [float(cfg.daily_amplitude)],
            "peak_hour": [float(cfg.peak_hour)],
            "weekly_amplitude": [float(cfg.weekly_amplitude)],
            "peak_day": [float(cfg.peak_day)],
            "time_zone": [cfg.time_zone],
            "utc_offset_hours": [cycle.offset_hours],
            "weekly_mean_of_product": [cycle.norm],
            "operational_days": [t_op],
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
    table = log.events.select(list(_TAOBAO_COLUMNS))
    write_plain_csv(table, path, header=False)
    return table.num_rows


def write_plain_csv(table: pa.Table, path: Path, *, header: bool) -> None:
    """Write ``table`` as CSV without quotes, nulls as empty fields; gzip when ``.gz``.

    Why unquoted: the synthetic values never hold a comma, a quote or a newline, and a file
    without quotes reads the same in every tool. The header (when asked) is written by hand
    because Arrow quotes header names whatever the quoting style. Same table, same bytes:
    the gzip header carries no time and no file name. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none", batch_size=65_536)
    head = (",".join(table.column_names) + "\n").encode() if header else b""
    if path.name.endswith(".gz"):
        # gzip level 6 (the gzip tool's default) is 3x faster than Arrow's level 9 for 1% more
        # bytes; mtime=0 and no file name in the header keep the bytes a function of the seed.
        with (
            path.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as sink,
        ):
            sink.write(head)
            pacsv.write_csv(table, sink, options)
    elif header:
        with path.open("wb") as sink:
            sink.write(head)
            pacsv.write_csv(table, sink, options)
    else:
        pacsv.write_csv(table, str(path), options)


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

Only when the feature is on (columns absent otherwise):
  session kernel: categories.parquet adds session_decay_per_day, session_half_life_days;
    interests.parquet adds session_excitation_per_day, session_decay_per_day,
    session_half_life_days, session_branching_ratio; the kernel is then
    excitation * exp(-decay * dt) + session_excitation * exp(-session_decay * dt)
  fading: users.parquet adds fading (bool) and fades_at_days (days since start, NaN if not
    fading); from then on the user's baseline and excitations are multiplied by fading_factor
  daily/weekly cycle: cycle.parquet, one row: daily_amplitude, peak_hour, weekly_amplitude,
    peak_day, time_zone, utc_offset_hours (fixed, the zone's offset at the start),
    weekly_mean_of_product (normaliser, 1 up to rounding), operational_days (Phi(T)); every
    intensity is multiplied by g(t), and decays, rates and half-lives are in operational days

config: {config!r}
"""


def write_truth(log: SyntheticLog, directory: Path) -> list[Path]:
    """Write the truth tables as Parquet (plus a README.txt), for recovery checks outside Python.

    Parameters
    ----------
    log : SyntheticLog
        What `generate` returned.
    directory : Path
        Created if missing; ``categories.parquet``, ``interests.parquet``, ``users.parquet``,
        ``cycle.parquet`` (only when the log has a daily/weekly cycle) and ``README.txt`` are
        (over)written there.

    Returns
    -------
    list of Path
        The files written, in that order.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    tables = [
        ("categories", log.truth_categories),
        ("interests", log.truth_interests),
        ("users", log.truth_users),
    ]
    if log.truth_cycle is not None:
        tables.append(("cycle", log.truth_cycle))
    for name, table in tables:
        path = directory / f"{name}.parquet"
        pq.write_table(table, path)
        written.append(path)
    readme = directory / "README.txt"
    readme.write_text(_TRUTH_README.format(config=log.config), encoding="utf-8")
    written.append(readme)
    return written
