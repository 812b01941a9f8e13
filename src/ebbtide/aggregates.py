"""Private aggregates: counts of users and events per group, released with k-suppression
and, when a budget ε is given, user-level differential privacy.

Why one module: the report, ``ebbtide stats`` and ``ebbtide segments`` all publish counts
per group (per day, behaviour, category, segment); one mechanism with one set of checks
keeps their guarantee the same and stated in one place.

The mechanism (user-level ε-DP for counts, with contribution bounding):

1. **Contribution bounding.** Each user keeps at most `max_groups` groups per table (their
   own busiest groups, ties broken by a fixed hash of user and group: a choice that reads
   only that user's rows) and at most `max_rows` events per kept group. Adding or removing
   one user then changes a table's user counts by at most ``max_groups`` in L1 and its
   event counts by at most ``max_groups · max_rows``.
2. **Noise.** The discrete Laplace (two-sided geometric) mechanism: integer noise with
   ``P(z) ∝ exp(−|z| / b)``, scale ``b = sensitivity / ε`` (Ghosh, Roughgarden & Sundararajan
   2009), drawn with numpy as the difference of two geometric variables. A table's share of
   ε is split evenly between its user and event counts. Noisy counts are clamped at 0
   (post-processing). The sampler is numpy's floating-point one, not a constant-time exact
   sampler: fine against someone who sees the released numbers, not against someone
   timing the process (use OpenDP for that threat model). We chose numpy over OpenDP and
   diffprivlib to add no dependency for about 30 lines of well-known maths.
3. **Groups.** Where the set of groups is public (behaviours, segments, the days between
   the log's first and last day, plan actions), every group of that domain is released,
   zeros included, so the table is pure ε-DP; the log's span of days is treated as public
   (it is the period a report covers). Where groups come from the data (categories), a
   group is released only when its noisy user count reaches a threshold τ ≥ k chosen so
   that a group only one user makes appear is released with probability at most δ: that
   table is (ε, δ)-DP, and how many groups were dropped is not released.
4. **k-suppression.** Groups with fewer than `min_group_users` users (noisy under ε, true
   otherwise) are dropped and the table says how many (where that number is releasable).

The budget ε is the total of one release (one report, one command): `Release` splits it
evenly across the tables it was told it will publish and refuses a table more.

Examples
--------
>>> frame = pd.DataFrame({"user_id": list("aabbbc"), "day": list("xyxyxx"), "rows": 1})
>>> release = Release(ReleaseConfig(min_group_users=2), tables=1)
>>> release.counts(frame, ["day"], name="per day").table
  day  users  events
0   x      3       4
1   y      2       2
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError

__all__ = [
    "DEFAULT_MIN_GROUP_USERS",
    "Release",
    "ReleaseConfig",
    "ReleasedTable",
    "discrete_laplace",
    "release_store_counts",
]

#: Groups of fewer users than this are left out of every count table by default.
DEFAULT_MIN_GROUP_USERS = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseConfig:
    """How counts are released.

    Parameters
    ----------
    epsilon : float, optional
        Total privacy budget of one release (split evenly over its tables); None releases
        true counts, with k-suppression only.
    min_group_users : int
        k: groups with fewer users are left out; 1 leaves every group in (no suppression).
    max_groups : int
        Groups one user may count in, per table (only under `epsilon`).
    max_rows : int
        Events one user may add to one group (only under `epsilon`).
    delta : float
        Probability bound of the threshold of tables whose groups come from the data.
    seed : int, optional
        Seed of the noise, for tests only; default a fresh seed from the OS (`secrets`):
        a known seed lets anyone subtract the noise.
    """

    epsilon: float | None = None
    min_group_users: int = DEFAULT_MIN_GROUP_USERS
    max_groups: int = 4
    max_rows: int = 20
    delta: float = 1e-6
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.epsilon is not None and not (
            isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
        ):
            raise ConfigError(f"epsilon {self.epsilon!r} is not a number: pass e.g. 1.0")
        if self.epsilon is not None and self.epsilon <= 0:
            raise ConfigError(
                f"epsilon must be > 0, got {self.epsilon:g}: pass a budget such as 1.0"
                " (smaller is more private and noisier), or leave it out for true counts"
            )
        if self.min_group_users < 1:
            raise ConfigError(
                f"min_group_users must be at least 1, got {self.min_group_users}:"
                f" 1 turns suppression off, {DEFAULT_MIN_GROUP_USERS} is the default"
            )
        for name in ("max_groups", "max_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.delta < 1:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}: e.g. 1e-6")


@dataclass(frozen=True)
class ReleasedTable:
    """One released count table and what was done to it.

    Attributes
    ----------
    name : str
    table : DataFrame
        The group columns, ``users`` and (when released) ``events``: non-negative ints.
    min_group_users : float
        Users a group needed to be released (k, or the higher threshold τ).
    suppressed : int or None
        Groups left out; None when that number would itself leak (groups from the data).
    epsilon, delta : float or None, float
        This table's share of the budget (None without noise) and its δ (0 when pure).
    max_groups, max_rows : int or None
        The contribution bounds applied (None without noise).
    """

    name: str
    table: pd.DataFrame
    min_group_users: float
    suppressed: int | None
    epsilon: float | None = None
    delta: float = 0.0
    max_groups: int | None = None
    max_rows: int | None = None

    def note(self) -> str:
        """One sentence for a report or a message: what was left out and how it was noised."""
        threshold = f"{self.min_group_users:g}"
        if self.suppressed is None:
            left = f"groups under {threshold} users left out (their number is not released)"
        elif self.suppressed == 0:
            left = f"no group under {threshold} users"
        else:
            s = "s" if self.suppressed != 1 else ""
            left = f"{self.suppressed:,} group{s} under {threshold} users left out"
        if self.epsilon is None:
            return f"{self.name}: true counts; {left}."
        bounds = f"each user counted in at most {self.max_groups} group(s)" + (
            f" with at most {self.max_rows} events each" if "events" in self.table else ""
        )
        guarantee = f"ε = {self.epsilon:.4g}" + (f", δ = {self.delta:.2g}" if self.delta else "")
        return f"{self.name}: noisy counts ({guarantee}; {bounds}); {left}."

    def to_dict(self) -> dict[str, Any]:
        """The table's guarantee as plain values (JSON-ready), without its rows."""
        return {
            "name": self.name,
            "min_group_users": self.min_group_users,
            "suppressed": self.suppressed,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "max_groups": self.max_groups,
            "max_rows": self.max_rows,
        }


def discrete_laplace(rng: np.random.Generator, scale: float, size: int) -> np.ndarray:
    """Integer noise with ``P(z) ∝ exp(−|z| / scale)``: difference of two geometrics.

    Its variance is ``2q / (1 − q)²`` with ``q = exp(−1 / scale)`` (about ``2 · scale²``).
    """
    if scale <= 0:
        raise ConfigError(f"noise scale must be > 0, got {scale!r}")
    p = -math.expm1(-1.0 / scale)  # success probability 1 − q, accurate for large scales
    return (rng.geometric(p, size) - rng.geometric(p, size)).astype(np.int64)


@dataclass
class Release:
    """One release of several count tables under one budget.

    Parameters
    ----------
    config : ReleaseConfig
    tables : int
        How many tables this release publishes: each gets ``epsilon / tables``.
    """

    config: ReleaseConfig
    tables: int
    released: list[ReleasedTable] = field(default_factory=list)
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.tables < 1:
            raise ConfigError(f"a release needs at least one table, got {self.tables}")
        seed = self.config.seed if self.config.seed is not None else secrets.randbits(128)
        self._rng = np.random.default_rng(seed)

    @property
    def epsilon_per_table(self) -> float | None:
        """Each table's share of the budget (None without noise)."""
        eps = self.config.epsilon
        return None if eps is None else eps / self.tables

    @property
    def delta(self) -> float:
        """The release's total δ: the sum over its tables (0 when every table is pure)."""
        return float(sum(t.delta for t in self.released))

    def summary(self) -> dict[str, Any]:
        """The release's guarantee as plain values (JSON-ready)."""
        return {
            "epsilon": self.config.epsilon,
            "epsilon_per_table": self.epsilon_per_table,
            "delta": self.delta,
            "unit": "user",
            "mechanism": "discrete Laplace" if self.config.epsilon is not None else None,
            "min_group_users": self.config.min_group_users,
            "max_groups": self.config.max_groups if self.config.epsilon is not None else None,
            "max_rows": self.config.max_rows if self.config.epsilon is not None else None,
            "tables": [t.to_dict() for t in self.released],
        }

    def counts(
        self,
        contributions: pd.DataFrame,
        by: Sequence[str],
        *,
        name: str,
        user: str = "user_id",
        rows: str | None = "rows",
        domain: pd.DataFrame | None = None,
        max_groups: int | None = None,
        events: bool = True,
    ) -> ReleasedTable:
        """Release users (and events) per group of `by`.

        Parameters
        ----------
        contributions : DataFrame
            One row per (user, group) or finer: `user`, the `by` columns and `rows` (the
            user's events there; None counts each row as one event).
        by : sequence of str
            The group columns.
        name : str
            What the table is, in words (for its note).
        domain : DataFrame, optional
            Every possible group (the `by` columns), when that set is public: all of it is
            released (zeros included; groups outside it are dropped), pure ε-DP.
        max_groups : int, optional
            A tighter bound known by construction (1 for segments: one per user).
        events : bool
            Release the event counts too (False for tables of users only).

        Returns
        -------
        ReleasedTable
        """
        if len(self.released) >= self.tables:
            raise ConfigError(
                f"this release was planned for {self.tables} table(s) and {name!r} would be"
                " one more: its budget is spent; plan the release with more tables"
            )
        by = list(by)
        frame = contributions[[user, *by]].copy()
        frame["_rows"] = 1 if rows is None else contributions[rows].to_numpy()
        per_pair = frame.groupby([user, *by], sort=False, dropna=False)["_rows"].sum().reset_index()
        cfg, eps = self.config, self.epsilon_per_table
        groups_cap = min(cfg.max_groups, max_groups or cfg.max_groups)
        if domain is not None:
            domain = domain[by].drop_duplicates().reset_index(drop=True)
            groups_cap = min(groups_cap, len(domain)) or 1
        if eps is not None:
            per_pair = _bounded(per_pair, user, by, groups_cap, cfg.max_rows)
        table = (
            per_pair.groupby(by, sort=False, dropna=False)
            .agg(users=(user, "nunique"), events=("_rows", "sum"))
            .reset_index()
        )
        if domain is not None:
            table = domain.merge(table, on=by, how="left").fillna({"users": 0, "events": 0})
        table = table.astype({"users": "int64", "events": "int64"})
        threshold: float = cfg.min_group_users
        delta = 0.0
        if eps is not None:
            share = eps / 2 if events else eps
            user_scale = groups_cap / share
            table["users"] = np.maximum(
                table["users"].to_numpy() + discrete_laplace(self._rng, user_scale, len(table)),
                0,
            )
            if events:
                event_scale = groups_cap * cfg.max_rows / share
                noise = discrete_laplace(self._rng, event_scale, len(table))
                table["events"] = np.maximum(table["events"].to_numpy() + noise, 0)
            if domain is None:
                tau = _threshold(user_scale, groups_cap, cfg.delta)
                threshold, delta = max(threshold, tau), cfg.delta
        kept = table[table["users"] >= threshold]
        if eps is None:  # true counts: groups without users are not groups
            kept = kept[kept["users"] > 0]
            suppressed: int | None = int(
                ((table["users"] > 0) & (table["users"] < threshold)).sum()
            )
        elif domain is not None:  # the domain is public, so is how much of it is shown
            suppressed = len(table) - len(kept)
        else:
            suppressed = None
        columns = [*by, "users", *(["events"] if events else [])]
        kept = kept.sort_values(by, kind="stable").reset_index(drop=True)[columns]
        result = ReleasedTable(
            name=name,
            table=kept,
            min_group_users=threshold,
            suppressed=suppressed,
            epsilon=eps,
            delta=delta,
            max_groups=groups_cap if eps is not None else None,
            max_rows=cfg.max_rows if eps is not None and events else None,
        )
        self.released.append(result)
        return result


def _bounded(
    per_pair: pd.DataFrame, user: str, by: list[str], max_groups: int, max_rows: int
) -> pd.DataFrame:
    """Each user's `max_groups` busiest groups (ties: a fixed hash), rows clipped to `max_rows`.

    The choice reads only the user's own rows, so one user's presence moves at most
    `max_groups` groups by at most `max_rows` events each.
    """
    tie = pd.util.hash_pandas_object(per_pair[[user, *by]], index=False).to_numpy()
    ranked = per_pair.assign(_tie=tie).sort_values(
        [user, "_rows", "_tie"], ascending=[True, False, True], kind="stable"
    )
    kept = ranked.groupby(user, sort=False).head(max_groups)
    return kept.assign(_rows=kept["_rows"].clip(upper=max_rows)).drop(columns="_tie")


def _threshold(scale: float, max_groups: int, delta: float) -> float:
    """Smallest τ with ``max_groups · P(1 + Z ≥ τ) ≤ delta`` for discrete Laplace Z.

    A group that exists only because of one user has one user; ``P(Z ≥ m) = q^m / (1 + q)``
    for m ≥ 1, ``q = exp(−1 / scale)``.
    """
    q = math.exp(-1.0 / scale)
    m = math.ceil(math.log(delta * (1 + q) / max_groups) / math.log(q))
    return float(1 + max(m, 1))


def release_store_counts(
    store: Any, config: ReleaseConfig, *, tz: str = "UTC", per: str = "day"
) -> dict[str, Any]:
    """`ebbtide stats`'s counts, released: users, events per behaviour, per period and
    per category, under one budget split over those four tables.

    The SQL reads the store directly (one row per user and group) because contribution
    bounding needs each user's rows; the store's own `stats` gives exact totals only.
    Behaviours and the periods from the log's bulk start (its 1st percentile of time, so
    stray early events add no noise-only periods; periods before it are left out) to its
    last event are public domains; categories come from the data (threshold τ under a
    budget).

    Parameters
    ----------
    store : EventStore
    config : ReleaseConfig
    tz : str
        Time zone in which periods begin.
    per : {"day", "week", "month"}
        Period of the time table.

    Returns
    -------
    dict
        ``privacy`` (the guarantee), ``users``, ``events``, ``events_by_behavior``,
        ``events_per_period`` ([label, events] pairs), ``per_period`` and
        ``per_category`` (DataFrames with ``users`` and ``events``), ``timezone``,
        ``period``.
    """
    from ebbtide.schema import BEHAVIORS

    label = {"day": "%Y-%m-%d", "week": "%Y-%m-%d", "month": "%Y-%m"}[per]
    release = Release(config, tables=4)
    con = store.con
    everyone = con.execute(
        "SELECT user_idx, 'all' AS g, count(*) AS rows FROM events GROUP BY user_idx"
    ).df()
    total = release.counts(
        everyone, ["g"], name="users", user="user_idx", events=False, max_groups=1,
        domain=pd.DataFrame({"g": ["all"]}),
    ).table  # fmt: skip
    behaviours = con.execute(
        "SELECT user_idx, behavior, count(*) AS rows FROM events GROUP BY ALL"
    ).df()
    names = {b.code: b.value for b in BEHAVIORS}
    behaviours["behavior"] = behaviours["behavior"].map(names)
    by_behavior = release.counts(
        behaviours, ["behavior"], name="events per behaviour", user="user_idx",
        domain=pd.DataFrame({"behavior": list(names.values())}),
    ).table  # fmt: skip
    periods = con.execute(
        """SELECT user_idx, strftime(date_trunc($per, timezone($tz, ts)), $label) AS period,
        count(*) AS rows FROM events GROUP BY ALL""",
        {"per": per, "tz": tz, "label": label},
    ).df()
    domain = None
    if config.epsilon is not None and not periods.empty:
        freq = {"day": "D", "week": "W-SUN", "month": "M"}[per]
        start = con.execute(  # the bulk start: stray early events add no noise-only periods
            "SELECT strftime(date_trunc($per, timezone($tz, quantile_disc(ts, 0.01))), $label)"
            " FROM events",
            {"per": per, "tz": tz, "label": label},
        ).fetchone()[0]
        span = pd.period_range(start, periods["period"].max(), freq=freq)
        domain = pd.DataFrame({"period": span.start_time.strftime(label)})
    per_period = release.counts(
        periods, ["period"], name=f"events per {per}", user="user_idx", domain=domain
    ).table
    categories = con.execute(
        """SELECT e.user_idx, c.category_id, count(*) AS rows FROM events e
        JOIN categories c USING (category_idx) GROUP BY ALL"""
    ).df()
    per_category = release.counts(
        categories, ["category_id"], name="events per category", user="user_idx"
    ).table
    users = int(total["users"].sum())
    events = int(by_behavior["events"].sum())
    return {
        "privacy": release.summary() | {"notes": [t.note() for t in release.released]},
        "users": users,
        "events": events,
        "events_by_behavior": dict(
            zip(by_behavior["behavior"], by_behavior["events"].astype(int).tolist(), strict=True)
        ),
        "events_per_period": [
            [p, int(n)] for p, n in zip(per_period["period"], per_period["events"], strict=True)
        ],
        "per_period": per_period,
        "per_category": per_category,
        "timezone": tz,
        "period": per,
    }
