"""`btyd`: "buy till you die" (BG/NBD or Pareto/NBD) behind the common model interface.

Two fits share one maths module (`btyd_math`): one where every action counts as a
transaction (for `p_return`), one on purchases only (for `p_buy`). Customers are
summarised per UTC day, as the BTYD papers do (several actions on one day are one
transaction), and every query re-summarises the history before its `at`, so a model
fitted in spring answers honestly in summer.

A log with (almost) no purchases, such as MovieLens ratings, gets the return model only:
with fewer than `MIN_BUYERS` buyers before the cut-off the purchase model is not fitted,
the model says why (a `DataQualityWarning` and ``metrics_["buy_model"]``) and leaves
``p_buy`` (and `expected_purchases`) out of `answers`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import timedelta
from typing import Literal

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError, ConvergenceError, DataQualityWarning
from ebbtide.features.history import History
from ebbtide.features.sequences import EventArrays, to_days
from ebbtide.models import btyd_math as bm
from ebbtide.models.base import Model, Progress
from ebbtide.schema import Behavior

#: Restricted-mean horizon: expected return times are E[min(time to return, this)].
RETURN_TIME_CAP_DAYS = 365.0
_GRID = np.concatenate([[0.0], np.geomspace(1 / 24, RETURN_TIME_CAP_DAYS, 24)])
#: Fewer customers with a purchase than this: no purchase model (nothing to fit a
#: purchase rate and a dropout process on), so no p_buy.
MIN_BUYERS = 10
#: How to set the penalty the fitting code's messages suggest, from Python and the CLI.
_PENALIZER_HINT = "penalizer=0.001 (BTYDConfig(penalizer=0.001), `ebbtide train --penalizer 0.001`)"


@dataclass(frozen=True, slots=True, kw_only=True)
class BTYDConfig:
    """Parameters of `BTYDModel`.

    kind : {"pareto_nbd", "bgnbd"}
        Pareto/NBD (lifetimes' best on CDNOW) or BG/NBD.
    penalizer : float
        L2 penalty on the log-parameters; 0 reproduces the published estimates.
    """

    kind: Literal["pareto_nbd", "bgnbd"] = "pareto_nbd"
    penalizer: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("pareto_nbd", "bgnbd"):
            raise ConfigError(f"BTYDConfig.kind={self.kind!r}: use 'pareto_nbd' or 'bgnbd'")
        if not (math.isfinite(self.penalizer) and self.penalizer >= 0):
            raise ConfigError(f"BTYDConfig.penalizer={self.penalizer} must be a number >= 0")


class BTYDModel(Model):
    """P(alive)-based return and purchase probabilities from per-customer (x, t_x, T)."""

    name = "btyd"
    config_class = BTYDConfig
    answers = frozenset({"p_return", "p_buy", "expected_return_time"})
    state_attributes = ("return_params_", "buy_params_")

    def _fit(self, events: EventArrays, progress: Progress | None) -> None:
        end = _last_day(self.cutoff_.timestamp() / 86_400)
        buy = events.behavior == Behavior.BUY.code
        buyers = int(np.unique(events.user_idx[buy]).size)
        self.metrics_ = {"customers": int(np.count_nonzero(events.lengths())), "buyers": buyers}
        for label, mask in (("return", None), ("buy", buy)):
            if label == "buy" and buyers < MIN_BUYERS:
                why = (
                    f"not fitted: {buyers} customer(s) bought before the cut-off, fewer than"
                    f" {MIN_BUYERS}"
                )
                warnings.warn(
                    f"btyd purchase model {why}, so the model answers return questions only"
                    " (no p_buy, no expected_purchases); the return model counts every action",
                    DataQualityWarning,
                    stacklevel=3,
                )
                self.buy_params_ = np.full(len(fields(self._params_class())), np.nan)
                self.metrics_["buy_model"] = why
                continue
            _, rfm = self._summarise(events, mask, end)
            params, loglik = self._fit_params(rfm)
            setattr(self, f"{label}_params_", np.array(astuple(params), dtype=np.float64))
            setattr(self, f"{label}_loglik_", loglik)
            self.metrics_[f"{label}_loglik"] = loglik
            if progress is not None:
                progress(f"fitted {label} model, log-likelihood {loglik:.1f}", math.nan)
        self._restrict_answers()

    def _restrict_answers(self) -> None:
        """No purchase model (too few buyers): no purchase questions."""
        fitted = bool(np.all(np.isfinite(self.buy_params_)))
        self.answers = type(self).answers - (set() if fitted else {"p_buy"})

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        super()._set_state(state)
        self._restrict_answers()

    def _fit_params(self, rfm: bm.RFM) -> tuple[bm.BGNBDParams | bm.ParetoNBDParams, float]:
        """Fit one model; messages that suggest a penalizer say how to pass one."""
        fit = bm.fit_pareto_nbd if self.config.kind == "pareto_nbd" else bm.fit_bgnbd
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                result = fit(rfm, penalizer=self.config.penalizer)
            except ConvergenceError as exc:
                raise ConvergenceError(_name_the_flag(str(exc))) from None
        for warning in caught:
            # stack: here, _fit, Model.fit, the caller
            warnings.warn(_name_the_flag(str(warning.message)), warning.category, stacklevel=4)
        return result

    def _params(self, which: str) -> bm.BGNBDParams | bm.ParetoNBDParams:
        return self._params_class()(*map(float, getattr(self, f"{which}_params_")))

    def _params_class(self) -> type[bm.BGNBDParams | bm.ParetoNBDParams]:
        return bm.ParetoNBDParams if self.config.kind == "pareto_nbd" else bm.BGNBDParams

    @staticmethod
    def _summarise(
        events: EventArrays, mask: np.ndarray | None, end_day: int
    ) -> tuple[np.ndarray, bm.RFM]:
        users, t = events.user_idx, events.t
        if mask is not None:
            users, t = users[mask], t[mask]
        return bm.rfm_from_transactions(users, np.floor(t).astype(np.int64), end_day, 1.0)

    def _rfm_for(self, events: EventArrays, users: np.ndarray, at: float, which: str) -> bm.RFM:
        """(x, t_x, T) of `users` at `at`; users with no transaction yet start afresh (0, 0, 0)."""
        mask = None if which == "return" else events.behavior == Behavior.BUY.code
        ids, rfm = self._summarise(events, mask, _last_day(at))
        position = np.searchsorted(ids, users)
        known = (position < ids.size) & (ids[np.minimum(position, max(ids.size - 1, 0))] == users)
        pick = np.where(known, position, 0)

        def column(values: np.ndarray) -> np.ndarray:
            return np.where(known, values[pick] if values.size else 0.0, 0.0)

        return bm.RFM(column(rfm.frequency), column(rfm.recency), column(rfm.age))

    def _p_any(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float, which: str
    ) -> np.ndarray:
        return self._p_any_rfm(self._rfm_for(events, users, at, which), horizon, which)

    def _p_any_rfm(self, rfm: bm.RFM, horizon: float, which: str) -> np.ndarray:
        p_any = (
            bm.pareto_nbd_p_any_transaction
            if self.config.kind == "pareto_nbd"
            else bm.bgnbd_p_any_transaction
        )
        return p_any(self._params(which), rfm, horizon)

    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        return self._p_any(events, users, at, horizon, "return")

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        return self._p_any(events, users, at, horizon, "buy")

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        """Restricted mean: the area under P(not returned by τ) for τ up to one year."""
        rfm = self._rfm_for(events, users, at, "return")
        p_any = bm.p_any_transaction_curve(self._params("return"), rfm, _GRID[1:])
        survival = np.vstack([np.ones(users.size), 1.0 - p_any])
        return np.trapezoid(survival, _GRID, axis=0)

    def expected_purchases(
        self,
        history: History,
        users: Sequence[str] | None = None,
        *,
        horizon: timedelta,
        in_sample: bool = False,
    ) -> pd.DataFrame:
        """Expected purchase days in ``[at, at + horizon)``, ``at = history.at``: user_id,
        expected_purchases (asked like `p_buy`)."""
        local, index, marked = self._prepare("p_buy", history, users, in_sample)
        rfm = self._rfm_for(local.events, index, to_days(history.at), "buy")
        expected = (
            bm.pareto_nbd_expected_transactions
            if self.config.kind == "pareto_nbd"
            else bm.bgnbd_expected_transactions
        )
        days = horizon.total_seconds() / 86_400
        return self._frame(
            local, index, marked, expected_purchases=expected(self._params("buy"), rfm, days)
        )


def _name_the_flag(message: str) -> str:
    """The fitting code's advice to pass ``penalizer=0.001``, with where to pass it."""
    return message.replace("penalizer=0.001", _PENALIZER_HINT)


def _last_day(at_days: float) -> int:
    """The last whole UTC day strictly before the instant `at_days`."""
    return math.ceil(at_days) - 1
