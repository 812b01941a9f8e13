"""The budgeted plan: at most one action per user, the most expected value the budget buys.

Why a solver and not a ranking: a budget shared by all users makes the choices interact (a
cheap push to many users may beat an expensive coupon to a few), which is a multiple-choice
knapsack problem.

**The problem.** Input is a candidates table, one row per feasible (user, action): ``value``
is the expected *incremental* effect of the action on that user over doing nothing, in the
objective's unit (conversions, or margin in the budget's currency; it may be negative), and
``cost`` the expected cost in the budget's currency, redemption included. The planner picks
x_{u,a} ∈ {0, 1} to

    maximise  Σ value · x    subject to  Σ cost · x ≤ budget,
                                         Σ_a x_{u,a} ≤ 1 for every user,
                                         Σ x ≤ max_contacts (when set),

and users inside the frequency cap get nothing. **Cost is not subtracted from the objective**:
the budget limits spend and value is what is maximised, because conversions and currency are
different units. Pass ``value_per_cost_unit=k`` to maximise net value ``value − k · cost``
instead (for objective ``"margin"``, ``k = 1`` maximises margin minus spend); ``value`` in
the plan is then that net value. Options with value ≤ 0 (after that conversion) are never
chosen, and "none" (value 0, cost 0) is always available.

**Solvers.** ``exact``: `scipy.optimize.milp` (HiGHS) on binary x, zero gap (to HiGHS's
tolerances: an option worth under ~1e-10 of the largest value may be overlooked); used when
at most `exact_max_rows` useful rows remain (positive value, affordable, contactable user).
``greedy``: the classic MCKP greedy, vectorised: per user the upper convex hull of its
(cost, value) options, incremental steps sorted globally by Δvalue/Δcost (ties: user id, then
the user's cheaper step first), taken while budget and contacts allow; a step that no longer
fits is skipped and so are that user's later steps. Its upper bound is the LP relaxation
(the fractional greedy). When `max_contacts` binds, contacts are also priced by a
Lagrange multiplier λ found by a short golden-section search: each λ gives a tighter bound
and another greedy plan, and the best plan found is returned. ``gap = upper_bound −
total_value``.

Results are deterministic: rows are put in a canonical order first, so shuffling the input
changes nothing. The exact plan's spend is checked with an exactly rounded sum; the greedy
one can exceed the budget only by the rounding of a running sum (~1e-10 relative at a
million steps).

Examples
--------
>>> import pandas as pd
>>> candidates = pd.DataFrame({"user": [1, 1, 2], "action": ["push", "coupon_10", "push"],
...                            "value": [0.02, 0.05, 0.01], "cost": [0.01, 0.5, 0.01]})
>>> result = plan_campaign(candidates, Budget(0.6))
>>> result.assignments["action"].tolist()
['coupon_10', 'push']
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from ebbtide.activate.actions import NONE, ActionCatalogue, Budget, Caps
from ebbtide.errors import (
    ConfigError,
    ConvergenceError,
    DataQualityWarning,
    InputFormatError,
)

__all__ = [
    "EXACT_MAX_ROWS",
    "METHODS",
    "Plan",
    "build_candidates",
    "plan",
    "plan_campaign",
]

logger = logging.getLogger(__name__)

#: Solver choices of `plan_campaign`.
METHODS = ("auto", "exact", "greedy")
#: ``method="auto"`` solves exactly up to this many useful candidate rows.
EXACT_MAX_ROWS = 2000
_USER_COLUMNS = ("user_id", "user_idx", "user")
_EXACT_TIME_LIMIT_S = 60.0
#: Golden-section steps over the contact price λ when max_contacts binds the greedy.
_LAGRANGE_STEPS = 14


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """Who gets which action, and what the plan is expected to buy.

    Attributes
    ----------
    assignments : DataFrame
        One row per input user, sorted by user: the user column (as named in the input),
        ``action`` (``"none"`` when not contacted), ``value``, ``cost`` and ``reason``.
    total_value, total_cost : float
        Sums over the assignments (value in the objective's unit, cost in `currency`).
    budget : float
        The spend limit the plan was made under.
    method : str
        ``"exact"`` or ``"greedy"``.
    upper_bound : float
        No plan can beat this value (exact: the optimum; greedy: the LP or Lagrangian bound).
    gap, gap_relative : float
        ``upper_bound − total_value``, and that over ``upper_bound`` (0 when it is 0).
    n_contacts : int
        Users given an action other than ``"none"``.
    currency, objective : str
        Units of cost and value; `objective` says ``"net"`` when cost was subtracted.
    """

    assignments: pd.DataFrame = field(repr=False)
    total_value: float
    total_cost: float
    budget: float
    method: str
    upper_bound: float
    gap: float
    gap_relative: float
    n_contacts: int
    currency: str
    objective: str

    def to_dict(self) -> dict[str, Any]:
        """The plan as plain Python types (JSON-ready): the summary plus ``assignments``
        as a list of row dicts."""
        summary = {
            name: getattr(self, name)
            for name in (
                "method",
                "objective",
                "currency",
                "budget",
                "total_value",
                "total_cost",
                "upper_bound",
                "gap",
                "gap_relative",
                "n_contacts",
            )
        }
        summary["n_users"] = len(self.assignments)
        summary["assignments"] = [
            {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in self.assignments.to_dict(orient="records")
        ]
        return summary


@dataclass(frozen=True, slots=True)
class _Solution:
    chosen: np.ndarray  # indices into the useful rows, at most one per user
    upper_bound: float


def plan_campaign(
    candidates: pd.DataFrame | Mapping[str, Any],
    budget: ActionCatalogue | Budget | float,
    *,
    caps: Caps | None = None,
    last_contact_days_ago: pd.Series | Mapping[Any, float] | None = None,
    contactable: pd.Series | Mapping[Any, bool] | None = None,
    method: str = "auto",
    value_per_cost_unit: float | None = None,
    exact_max_rows: int = EXACT_MAX_ROWS,
) -> Plan:
    """Choose at most one action per user to maximise expected value within the budget.

    Parameters
    ----------
    candidates : DataFrame or mapping of arrays
        One row per feasible (user, action): a user column (``user_id``, ``user_idx`` or
        ``user``), ``action``, ``value`` (expected incremental effect, any sign) and ``cost``
        (expected cost, >= 0). Rows for ``"none"`` (value 0, cost 0) may list users with
        nothing else; every user in the table gets exactly one row in the plan.
    budget : ActionCatalogue, Budget or float
        A catalogue brings budget, caps and the allowed action names; a float is a spend
        limit with no caps unless `caps` is given.
    caps : Caps, optional
        Contact caps when `budget` is not a catalogue (a catalogue carries its own).
    last_contact_days_ago : Series or mapping, optional
        Days since each user's last contact, indexed by user id (NaN: never contacted).
        Required, for every user, when the frequency cap is above 0: the planner applies the
        cap itself rather than trusting a pre-filtered table.
    contactable : Series or mapping of bool, optional
        Further exclusions by the caller (opt-outs), indexed by user id, every user present.
    method : {"auto", "exact", "greedy"}
        ``"auto"`` solves exactly up to `exact_max_rows` useful rows, else greedily.
    value_per_cost_unit : float, optional
        If given, maximise ``value − value_per_cost_unit · cost`` (see the module docstring).
    exact_max_rows : int
        Size limit of the exact solver under ``"auto"``.

    Returns
    -------
    Plan

    Raises
    ------
    ConfigError
        On a bad option (method, budget, caps, a missing contact history under a cap).
    InputFormatError
        On a malformed candidates table or contact table.
    """
    spec = _resolve_budget(budget, caps)
    total, currency, objective, caps, catalogue = spec
    if method not in METHODS:
        raise ConfigError(f"method = {method!r} is unknown; allowed: {', '.join(METHODS)}")
    if not isinstance(exact_max_rows, int) or exact_max_rows < 0:
        raise ConfigError(f"exact_max_rows = {exact_max_rows!r} must be an integer >= 0")
    if value_per_cost_unit is not None and not (
        isinstance(value_per_cost_unit, int | float)
        and math.isfinite(value_per_cost_unit)
        and value_per_cost_unit >= 0
    ):
        raise ConfigError(
            f"value_per_cost_unit = {value_per_cost_unit!r} must be a finite number >= 0"
        )
    if caps.min_days_between_contacts > 0 and last_contact_days_ago is None:
        raise ConfigError(
            f"caps.min_days_between_contacts = {caps.min_days_between_contacts:g} needs"
            " last_contact_days_ago (one entry per user, NaN for never contacted): pass it,"
            " or set min_days_between_contacts = 0 to plan without a contact history"
        )

    table = _Candidates.parse(candidates, catalogue)
    n_users = len(table.users)
    values = table.value
    if value_per_cost_unit is not None:
        values = values - float(value_per_cost_unit) * table.cost
        objective = f"net {objective}"

    days = _per_user(last_contact_days_ago, table, "last_contact_days_ago", float)
    if days is not None and (days < 0).any():
        bad = table.users[np.flatnonzero(days < 0)[0]]
        raise InputFormatError(
            f"last_contact_days_ago is negative for user {_show(bad)}; days since the last"
            " contact must be >= 0 (NaN for never contacted)"
        )
    allowed = _per_user(contactable, table, "contactable", bool)
    excluded = np.zeros(n_users, bool) if allowed is None else ~allowed
    if days is not None and caps.min_days_between_contacts > 0:
        capped = days < caps.min_days_between_contacts  # NaN (never contacted) compares False
    else:
        capped = np.zeros(n_users, bool)
    reachable = ~excluded & ~capped

    is_action = table.action_names[table.action] != NONE
    positive = is_action & (values > 0)
    has_positive = np.zeros(n_users, bool)
    has_positive[table.user[positive]] = True
    affordable = positive & (table.cost <= total)
    has_affordable = np.zeros(n_users, bool)
    has_affordable[table.user[affordable]] = True
    no_contacts = caps.max_contacts == 0
    useful = np.flatnonzero(affordable & reachable[table.user] & (not no_contacts))

    order = np.lexsort(
        (table.action[useful], -values[useful], table.cost[useful], table.user[useful])
    )
    useful = useful[order]
    u, v, c = table.user[useful], values[useful], table.cost[useful]
    if method == "auto":
        method = "exact" if useful.size <= exact_max_rows else "greedy"
    if method == "exact":
        solution = _solve_exact(u, v, c, total, caps.max_contacts)
    else:
        solution = _solve_greedy(u, v, c, total, caps.max_contacts, n_users)
    rows = useful[solution.chosen]
    logger.info("planned %d users with %s: %d contacts", n_users, method, rows.size)

    action = np.full(n_users, NONE, dtype=object)
    value = np.zeros(n_users)
    cost = np.zeros(n_users)
    chosen_users = table.user[rows]
    action[chosen_users] = table.action_names[table.action[rows]]
    value[chosen_users] = values[rows]
    cost[chosen_users] = table.cost[rows]
    chosen = np.zeros(n_users, bool)
    chosen[chosen_users] = True
    total_value = math.fsum(value[chosen])
    total_cost = math.fsum(cost[chosen])
    n_contacts = int(chosen.sum())
    upper_bound = max(solution.upper_bound, total_value)
    gap = upper_bound - total_value

    reason = _reasons(
        method=method,
        chosen=chosen,
        value=value,
        cost=cost,
        excluded=excluded,
        capped=capped,
        days=days,
        caps=caps,
        has_positive=has_positive,
        has_affordable=has_affordable,
        contacts_full=caps.max_contacts is not None and n_contacts >= caps.max_contacts,
        unit=_value_unit(objective, currency),
        currency=currency,
    )
    assignments = pd.DataFrame(
        {
            table.user_column: table.users,
            "action": action,
            "value": value,
            "cost": cost,
            "reason": reason,
        }
    )
    return Plan(
        assignments=assignments,
        total_value=total_value,
        total_cost=total_cost,
        budget=total,
        method=method,
        upper_bound=upper_bound,
        gap=gap,
        gap_relative=gap / upper_bound if upper_bound > 0 else 0.0,
        n_contacts=n_contacts,
        currency=currency,
        objective=objective,
    )


#: The brief's name for `plan_campaign`.
plan = plan_campaign


def build_candidates(effects: pd.DataFrame, catalogue: ActionCatalogue) -> pd.DataFrame:
    """Turn per-(user, action) effect estimates into the planner's value and cost.

    Why: the catalogue holds fixed costs and coupon terms, the uplift model holds effects;
    the redemption cost of a coupon depends on both (discount × order value × P(conversion)).

    Parameters
    ----------
    effects : DataFrame
        A user column, ``action``, ``uplift`` (expected incremental conversions against
        "none"), and optionally ``p_conversion`` (P(conversion) under the action) and
        ``order_value`` (expected order value in the budget's currency; NaN if unknown).
    catalogue : ActionCatalogue

    Returns
    -------
    DataFrame
        The user column, ``action``, ``value`` (uplift, or uplift × order value × margin
        for objective ``"margin"``) and ``cost`` (fixed cost, plus the redemption cost where
        the order value is known).

    Raises
    ------
    InputFormatError
        On missing columns, unknown actions, or a margin objective without order values.

    Warns
    -----
    DataQualityWarning
        When coupon rows lack an order value, so their redemption cost is left out.
    """
    user_column = _user_column(effects)
    missing = [k for k in ("action", "uplift") if k not in effects.columns]
    if missing:
        raise InputFormatError(
            f"effects lack column(s) {', '.join(missing)}; need {user_column}, action, uplift"
            " and optionally p_conversion, order_value"
        )
    names = effects["action"].to_numpy()
    unknown = sorted(set(pd.unique(names)) - set(catalogue.names), key=str)
    if unknown:
        raise InputFormatError(
            f"effects name action(s) {unknown[:5]} not in the catalogue"
            f" ({', '.join(catalogue.names)}): add them or drop those rows"
        )
    frame = pd.DataFrame({"action": catalogue.names})
    frame["fixed"] = [a.cost for a in catalogue.actions]
    frame["discount"] = [a.discount for a in catalogue.actions]
    frame["margin"] = [np.nan if a.margin is None else a.margin for a in catalogue.actions]
    terms = frame.set_index("action").reindex(names)
    uplift = effects["uplift"].to_numpy(dtype=float)
    is_none = names == NONE
    if np.any(uplift[is_none] != 0):
        raise InputFormatError(
            "effects give 'none' a non-zero uplift; uplift is measured against 'none',"
            " so its rows must have uplift 0"
        )
    n = len(effects)
    order_value = (
        effects["order_value"].to_numpy(dtype=float)
        if "order_value" in effects.columns
        else np.full(n, np.nan)
    )
    p_conversion = (
        effects["p_conversion"].to_numpy(dtype=float)
        if "p_conversion" in effects.columns
        else np.full(n, np.nan)
    )
    discount = terms["discount"].to_numpy()
    known = ~np.isnan(order_value)
    coupon = discount > 0
    if np.any(coupon & known & np.isnan(p_conversion)):
        raise InputFormatError(
            "coupon rows with an order_value need p_conversion (P(conversion) under the"
            " coupon) to price redemptions; add the column"
        )
    redemption = np.where(coupon & known, discount * order_value * p_conversion, 0.0)
    cost = terms["fixed"].to_numpy() + redemption
    margin_objective = catalogue.budget.objective == "margin"
    if margin_objective and np.any(~known & ~is_none):
        raise InputFormatError(
            "objective = 'margin' needs order_value on every row: value = uplift ×"
            " order_value × margin; add the column or plan for conversions"
        )
    if np.any(coupon & ~known):
        warnings.warn(
            f"{int(np.sum(coupon & ~known))} coupon rows have no order_value: their redemption"
            " cost is left out, so the plan may overspend; add order_value",
            DataQualityWarning,
            stacklevel=2,
        )
    if margin_objective:
        value = np.where(is_none, 0.0, uplift * order_value * terms["margin"].to_numpy())
    else:
        value = uplift
    return pd.DataFrame(
        {
            user_column: effects[user_column].to_numpy(),
            "action": names,
            "value": np.where(is_none, 0.0, value),
            "cost": np.where(is_none, 0.0, cost),
        }
    )


# --------------------------------------------------------------------------- input checks


def _resolve_budget(budget, caps):
    if isinstance(budget, ActionCatalogue):
        if caps is not None:
            raise ConfigError(
                "caps come with the catalogue; change them with actions.override(...)"
                " instead of passing caps="
            )
        b = budget.budget
        return b.total, b.currency, b.objective, budget.caps, budget
    if isinstance(budget, Budget):
        b = budget
    elif isinstance(budget, int | float) and not isinstance(budget, bool):
        b = Budget(float(budget))
    else:
        raise ConfigError(
            f"budget = {budget!r} must be an ActionCatalogue, a Budget or a number >= 0"
        )
    if caps is not None and not isinstance(caps, Caps):
        raise ConfigError(f"caps = {caps!r} must be a Caps object")
    return b.total, b.currency, b.objective, caps or Caps(), None


def _user_column(frame: pd.DataFrame) -> str:
    present = [c for c in _USER_COLUMNS if c in frame.columns]
    if len(present) != 1:
        found = "none" if not present else ", ".join(present)
        raise InputFormatError(
            f"the table needs exactly one user column of {', '.join(_USER_COLUMNS)};"
            f" found {found} among {list(frame.columns)}"
        )
    return present[0]


@dataclass(frozen=True, slots=True)
class _Candidates:
    """The candidates table as dense codes in canonical (user, action) order."""

    user_column: str
    users: np.ndarray  # sorted unique user ids
    action_names: np.ndarray  # sorted unique action names (object)
    user: np.ndarray  # per row, code into users
    action: np.ndarray  # per row, code into action_names
    value: np.ndarray
    cost: np.ndarray

    @classmethod
    def parse(cls, candidates, catalogue: ActionCatalogue | None) -> _Candidates:
        if isinstance(candidates, Mapping):
            try:
                candidates = pd.DataFrame(dict(candidates))
            except ValueError as error:
                raise InputFormatError(f"candidates cannot form a table: {error}") from error
        if not isinstance(candidates, pd.DataFrame):
            raise InputFormatError(
                f"candidates must be a DataFrame or a mapping of columns, got"
                f" {type(candidates).__name__}"
            )
        user_column = _user_column(candidates)
        missing = [k for k in ("action", "value", "cost") if k not in candidates.columns]
        if missing:
            raise InputFormatError(
                f"candidates lack column(s) {', '.join(missing)}; need {user_column}, action,"
                " value, cost"
            )
        try:
            user, users = pd.factorize(candidates[user_column], sort=True)
            action, names = pd.factorize(candidates["action"], sort=True)
        except TypeError as error:
            raise InputFormatError(
                f"candidates: {user_column} and action must each hold one sortable type"
                f" (all strings or all integers): {error}"
            ) from error
        if (user < 0).any() or (action < 0).any():
            raise InputFormatError(
                f"candidates: {user_column} or action is missing (NaN) in"
                f" {int(((user < 0) | (action < 0)).sum())} rows; drop or fill them"
            )
        names = np.asarray(names, dtype=object)
        if catalogue is not None:
            unknown = sorted(set(names) - set(catalogue.names), key=str)
            if unknown:
                raise InputFormatError(
                    f"candidates name action(s) {unknown[:5]} not in the catalogue"
                    f" ({', '.join(catalogue.names)}): add them to it or drop those rows"
                )
        value = _finite(candidates, "value")
        cost = _finite(candidates, "cost")
        if (cost < 0).any():
            i = int(np.argmax(cost < 0))
            raise InputFormatError(
                f"candidates: cost = {_show(cost[i])} for user {_show(users[user[i]])}, action"
                f" {_show(names[action[i]])}; costs must be >= 0"
            )
        order = np.lexsort((action, user))
        user, action, value, cost = user[order], action[order], value[order], cost[order]
        same = (user[1:] == user[:-1]) & (action[1:] == action[:-1])
        if same.any():
            i = int(np.argmax(same))
            raise InputFormatError(
                f"candidates list user {_show(users[user[i]])} with action"
                f" {_show(names[action[i]])} more than once ({int(same.sum())} duplicate rows"
                " in all); keep one row per (user, action)"
            )
        is_none = names[action] == NONE
        if np.any((value[is_none] != 0) | (cost[is_none] != 0)):
            raise InputFormatError(
                "candidates give 'none' a non-zero value or cost; doing nothing is the"
                " baseline (value 0, cost 0): fix or drop those rows"
            )
        return cls(
            user_column,
            np.asarray(users),
            names,
            user.astype(np.int64),
            action.astype(np.int64),
            value,
            cost,
        )


def _show(x: object) -> str:
    """repr of a plain Python value (``1``, not ``np.int64(1)``) for messages."""
    return repr(x.item() if isinstance(x, np.generic) else x)


def _finite(frame: pd.DataFrame, column: str) -> np.ndarray:
    try:
        values = frame[column].to_numpy(dtype=float)
    except (TypeError, ValueError) as error:
        raise InputFormatError(f"candidates: {column} must be numeric: {error}") from error
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputFormatError(
            f"candidates: {column} is NaN or infinite in {int(bad.sum())} rows (first at row"
            f" {int(np.argmax(bad))}); fill or drop them"
        )
    return values


def _per_user(data, table: _Candidates, name: str, dtype) -> np.ndarray | None:
    """`data` (a Series or mapping keyed by user id) aligned on the table's users."""
    if data is None:
        return None
    series = data if isinstance(data, pd.Series) else pd.Series(dict(data), dtype=object)
    if not series.index.is_unique:
        dup = series.index[series.index.duplicated()][0]
        raise InputFormatError(f"{name} lists user {_show(dup)} more than once; keep one entry")
    position = series.index.get_indexer(pd.Index(table.users))
    if (position < 0).any():
        missing = table.users[position < 0]
        raise InputFormatError(
            f"{name} lacks {missing.size} candidate users (e.g. {_show(missing[0])}); give every"
            f" user an entry{' (NaN for never contacted)' if dtype is float else ''}"
        )
    values = series.to_numpy()[position]
    try:
        if dtype is bool:
            if not all(isinstance(x, bool | np.bool_) for x in pd.unique(values)):
                raise TypeError("not all booleans")
            return values.astype(bool)
        return values.astype(float)
    except (TypeError, ValueError) as error:
        raise InputFormatError(
            f"{name} must hold {'booleans' if dtype is bool else 'numbers'}: {error}"
        ) from error


# --------------------------------------------------------------------------- solvers


def _solve_exact(u, v, c, budget: float, max_contacts: int | None) -> _Solution:
    """Binary MILP over the useful rows; re-solved with a tighter budget row if HiGHS's
    feasibility tolerance let the rounded answer overspend by a hair."""
    n = v.size
    if n == 0:
        return _Solution(np.empty(0, np.int64), 0.0)
    _, user_row = np.unique(u, return_inverse=True)
    one_each = sparse.csr_array(
        (np.ones(n), (user_row, np.arange(n))), shape=(int(user_row.max()) + 1, n)
    )
    scale = budget if budget > 0 else 1.0
    v_scale = float(np.max(np.abs(v)))  # > 0: useful rows have value > 0
    rhs = budget / scale
    for _ in range(20):
        constraints = [
            LinearConstraint(one_each, -np.inf, 1.0),
            LinearConstraint((c / scale)[None, :], -np.inf, rhs),
        ]
        if max_contacts is not None:
            constraints.append(LinearConstraint(np.ones((1, n)), -np.inf, max_contacts))
        with warnings.catch_warnings(), _c_stdout_silenced():
            # options beyond scipy's list go to HiGHS verbatim; scipy warns that it does so
            warnings.filterwarnings("ignore", "Unrecognized options", RuntimeWarning)
            result = milp(
                -v / v_scale,
                integrality=np.ones(n),
                bounds=Bounds(0.0, 1.0),
                constraints=constraints,
                options={
                    "mip_rel_gap": 0.0,
                    "mip_abs_gap": 0.0,
                    "time_limit": _EXACT_TIME_LIMIT_S,
                    "primal_feasibility_tolerance": 1e-10,
                    "mip_feasibility_tolerance": 1e-10,
                    "dual_feasibility_tolerance": 1e-10,
                },
            )
        if result.x is None:  # cannot happen (x = 0 is feasible) unless HiGHS failed
            raise ConvergenceError(
                f"the exact solver failed: {result.message}; use method='greedy'"
            )
        chosen = np.flatnonzero(result.x > 0.5)
        spent = math.fsum(c[chosen])
        if spent <= budget:
            break
        rhs -= 2 * (spent - budget) / scale + 1e-12
    else:
        chosen = np.empty(0, np.int64)
    if result.status == 0:
        bound = math.fsum(v[chosen])
    else:
        dual = result.mip_dual_bound
        bound = -float(dual) * v_scale if dual is not None and np.isfinite(dual) else math.inf
        logger.warning("exact solver stopped early: %s", result.message)
    return _Solution(chosen, bound)


@contextlib.contextmanager
def _c_stdout_silenced():
    """Send file descriptor 1 to the null device while HiGHS runs.

    Why: the HiGHS in scipy 1.17 prints a stray debug line ("HighsMipSolverData::
    transformNewIntegerFeasibleSolution tmpSolver.run();", ERGO-Code/HiGHS#2783) with C
    printf, which would end up inside ``ebbtide plan ... > plan.csv``.
    """
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no usable fd 1: nothing to protect
        saved = None
    if saved is None:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                _flush_c_stdio()
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def _flush_c_stdio() -> None:
    """fflush(NULL), so C-buffered output goes where fd 1 points now, not later."""
    with contextlib.suppress(OSError, AttributeError, TypeError):  # no libc handle (Windows)
        ctypes.CDLL(None).fflush(None)


def _group_starts(u: np.ndarray) -> np.ndarray:
    return np.r_[True, u[1:] != u[:-1]] if u.size else np.empty(0, bool)


def _solve_greedy(u, v, c, budget: float, max_contacts: int | None, n_users: int) -> _Solution:
    """MCKP greedy; with a binding contact cap, also Lagrangian-shifted greedy passes.

    Why the shift: when `max_contacts` binds, value per currency unit is the wrong ranking
    (a cheap e-mail wins over a push worth ten times more per contact). Charging λ per
    contact, ``UB(λ) = λ · max_contacts + LP(value − λ)`` is an upper bound for every
    λ >= 0 and convex in λ; a golden-section search over λ lowers it, and the greedy plan of
    each shifted problem (contact cap still enforced) is kept when its true value is best.
    """
    if v.size == 0:
        return _Solution(np.empty(0, np.int64), 0.0)
    chosen, bound, best_value = _greedy_pass(u, v, c, budget, max_contacts, n_users)
    if max_contacts is None:
        return _Solution(chosen, bound)
    top = np.sort(pd.Series(v).groupby(u, sort=False).max().to_numpy())[::-1]
    bound = min(bound, float(np.sum(top[:max_contacts])))
    if max_contacts == 0 or chosen.size < max_contacts:
        return _Solution(chosen, bound)
    # λ runs over the quantiles of {0} ∪ values, so one outlier does not stretch the search
    levels = np.sort(np.r_[0.0, v])
    cache: dict[float, float] = {}

    def upper(t: float) -> float:
        nonlocal chosen, best_value, bound
        t = round(t, 12)
        if t not in cache:
            shift = float(np.interp(t * (levels.size - 1), np.arange(levels.size), levels))
            rows = np.flatnonzero(v > shift)
            picked, lp, _ = _greedy_pass(
                u[rows], v[rows] - shift, c[rows], budget, max_contacts, n_users
            )
            picked = rows[picked]
            value = math.fsum(v[picked])
            if value > best_value:
                chosen, best_value = picked, value
            cache[t] = shift * max_contacts + lp
            bound = min(bound, cache[t])
        return cache[t]

    low, high = 0.0, 1.0
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = high - inv_phi * (high - low), low + inv_phi * (high - low)
    for _ in range(_LAGRANGE_STEPS):
        if upper(a) <= upper(b):
            high, b = b, a
            a = high - inv_phi * (high - low)
        else:
            low, a = a, b
            b = low + inv_phi * (high - low)
    return _Solution(np.sort(chosen), bound)


def _greedy_pass(u, v, c, budget, max_contacts, n_users) -> tuple[np.ndarray, float, float]:
    """One MCKP greedy over per-user convex hulls, on rows sorted by (user, cost, -value,
    action) with value > 0: the chosen rows, the budget-only LP bound, the value."""
    if v.size == 0:
        return np.empty(0, np.int64), 0.0, 0.0
    # 1. drop dominated options: one that costs at least as much as another for no more value
    start = _group_starts(u)
    running = pd.Series(v).groupby(u, sort=False).cummax().to_numpy()
    previous = np.r_[0.0, running[:-1]]
    previous[start] = 0.0
    keep = np.flatnonzero(v > previous)
    hu, hv, hc = u[keep], v[keep], c[keep]
    # 2. keep the upper convex hull with the origin ("none"); collinear points stay
    while True:
        first = _group_starts(hu)
        last = np.r_[first[1:], True]
        pv = np.where(first, 0.0, np.r_[0.0, hv[:-1]])
        pc = np.where(first, 0.0, np.r_[0.0, hc[:-1]])
        nv, nc = np.r_[hv[1:], 0.0], np.r_[hc[1:], 0.0]
        below = ~last & ((hv - pv) * (nc - hc) < (nv - hv) * (hc - pc))
        if not below.any():
            break
        inside = ~below
        keep, hu, hv, hc = keep[inside], hu[inside], hv[inside], hc[inside]
    # 3. incremental steps, ratio non-increasing within a user (guards float noise)
    dv, dc = hv - pv, hc - pc
    with np.errstate(divide="ignore", over="ignore"):
        ratio = np.where(dc > 0, dv / np.where(dc > 0, dc, 1.0), np.inf)
    ratio = pd.Series(ratio).groupby(hu, sort=False).cummin().to_numpy()
    position = np.arange(hu.size)
    step = position - np.maximum.accumulate(np.where(first, position, 0))
    order = np.lexsort((step, hu, -ratio))
    o_user, o_dv, o_dc, o_first = hu[order], dv[order], dc[order], first[order]
    # 4. LP bound: the fractional greedy (budget only)
    spent = np.cumsum(o_dc)
    full = int(np.searchsorted(spent, budget, side="right"))
    bound = float(np.sum(o_dv[:full]))
    if full < o_dv.size:
        left = budget - (spent[full - 1] if full else 0.0)
        bound += left / o_dc[full] * o_dv[full]
    # 5. greedy with skipping, in rounds: a prefix fits, the next step is skipped; every
    #    later step that costs more than what is left is skipped too, blocking its user
    taken = _take_steps(o_user, o_dc, o_first, budget, max_contacts, n_users)
    hull_taken = np.sort(order[taken])
    chosen_hull = hull_taken[np.r_[hu[hull_taken][1:] != hu[hull_taken][:-1], True]]
    chosen = keep[chosen_hull]
    return chosen, bound, math.fsum(v[chosen])


def _take_steps(o_user, o_dc, o_first, budget, max_contacts, n_users) -> np.ndarray:
    """Positions of the steps the sequential greedy takes (see `_solve_greedy`, step 5)."""
    m = o_dc.size
    taken = np.zeros(m, bool)
    blocked_from = np.full(n_users, m, dtype=np.int64)  # first skipped position per user
    left = float(budget)
    contacts_left = m + 1 if max_contacts is None else int(max_contacts)
    remaining = np.arange(m)
    for _ in range(200):
        if not remaining.size:
            return taken
        spent = np.cumsum(o_dc[remaining])
        contacts = np.cumsum(o_first[remaining])
        fits = (spent <= left) & (contacts <= contacts_left)
        j = int(np.argmin(fits)) if not fits.all() else fits.size
        taken[remaining[:j]] = True
        if j:
            left -= spent[j - 1]
            contacts_left -= int(contacts[j - 1])
        if j == fits.size:
            return taken
        rest = remaining[j + 1 :]
        skip = (o_dc[rest] > left) | (o_first[rest] & (contacts_left < 1))
        skipped = np.r_[remaining[j], rest[skip]]
        np.minimum.at(blocked_from, o_user[skipped], skipped)
        rest = rest[~skip]
        remaining = rest[rest < blocked_from[o_user[rest]]]
    for p in remaining:  # pathological inputs only: finish one step at a time
        if p > blocked_from[o_user[p]]:
            continue
        if o_dc[p] <= left and (not o_first[p] or contacts_left >= 1):
            taken[p] = True
            left -= o_dc[p]
            contacts_left -= int(o_first[p])
        else:
            blocked_from[o_user[p]] = min(blocked_from[o_user[p]], p)
    return taken


# --------------------------------------------------------------------------- reasons


def _value_unit(objective: str, currency: str) -> str:
    base = objective.removeprefix("net ")
    unit = "conv" if base == "conversions" else f"{currency} margin"
    return f"net {unit}" if objective.startswith("net ") else unit


def _three_digits(x: np.ndarray, template: str) -> np.ndarray:
    """`template.format(v)` for each value rounded to 3 significant digits, formatted once
    per distinct rounded value (a million reasons without a Python loop per user)."""
    if x.size == 0:
        return np.empty(0, dtype=object)
    with np.errstate(all="ignore"):  # 0, inf and subnormal ratios are kept as they are
        exponent = np.floor(np.log10(np.abs(x)))
        exponent = np.where(np.isfinite(exponent), exponent, 0.0) - 2.0
        rounded = np.round(x / 10.0**exponent) * 10.0**exponent
    rounded = np.where(np.isfinite(rounded), rounded, x)
    keys, inverse = np.unique(rounded, return_inverse=True)
    texts = np.array([template.format(float(f"{k:.3g}")) for k in keys], dtype=object)
    return texts[inverse.ravel()]


def _reasons(
    *,
    method,
    chosen,
    value,
    cost,
    excluded,
    capped,
    days,
    caps,
    has_positive,
    has_affordable,
    contacts_full,
    unit,
    currency,
) -> np.ndarray:
    reason = np.full(chosen.size, "no action: budget exhausted", dtype=object)
    if contacts_full:
        reason[:] = f"no action: contact cap reached (max_contacts = {caps.max_contacts})"
    reason[~has_affordable] = (
        "no action: every action with positive value costs more than the whole budget"
    )
    reason[~has_positive] = "no action: no action has positive expected value"
    if capped.any():
        reason[capped] = _three_digits(
            days[capped],
            "no action: not contactable (contacted {:g} days ago, cap"
            f" {caps.min_days_between_contacts:g} days)",
        )
    reason[excluded] = "no action: not contactable (excluded by caller)"
    paid = chosen & (cost > 0)
    per = f"{unit}/{currency}" if currency else f"{unit} per cost unit"
    text = (
        f"best value per cost ({{:g}} {per}) within budget"
        if method == "greedy"
        else f"part of the optimal plan within budget ({{:g}} {per})"
    )
    with np.errstate(over="ignore"):
        ratio = value[paid] / cost[paid]
    reason[paid] = _three_digits(ratio, text)
    reason[chosen & (cost == 0)] = "positive expected value at no cost"
    return reason
