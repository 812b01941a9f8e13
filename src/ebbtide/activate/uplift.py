"""Uplift meta-learners: whom a campaign changes, ``τ(x) = E[Y | x, treated] − E[Y | x, control]``.

Why meta-learners: a response model says who will buy, not who buys *because* of the
campaign; the effect is a difference of two outcome surfaces, each learned by an ordinary
regressor. Three standard recipes over scikit-learn's histogram gradient boosting, one
interface (``fit(X, treated, y)`` then ``predict(X)`` → τ):

- `TLearner`: one outcome model per arm, ``τ = μ1 − μ0``; simple, but each arm's noise
  enters the difference.
- `XLearner` (Künzel et al. 2019): imputes each row's effect with the *other* arm's model
  and blends the two effect models by the propensity; good when arms differ in size.
- `DRLearner` (Kennedy 2020): regresses a cross-fitted doubly robust pseudo-outcome on
  ``x``; right on average if either the outcome models or the propensity are right.

Binary outcomes use regressors on 0/1 too (they estimate probabilities). Feature frames may
hold categorical columns (object, string or category dtype): categories are learned in
`fit`, unknown ones at `predict` become missing, and the trees split on them natively.
`compare_learners` fits them side by side on one split and scores them with `qini`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import StratifiedKFold, train_test_split

from ebbtide.activate import qini
from ebbtide.errors import CampaignLogError, ConfigError, DataQualityWarning, NotFittedError
from ebbtide.jsonable import to_jsonable

__all__ = [
    "LEARNERS",
    "DRLearner",
    "TLearner",
    "UpliftComparison",
    "UpliftConfig",
    "XLearner",
    "build_learner",
    "compare_learners",
]

#: Histogram gradient boosting bins categorical codes into at most this many values.
_MAX_CATEGORIES = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class UpliftConfig:
    """Base-model settings shared by the meta-learners.

    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        Boosting settings of every base model; small trees and large leaves because effects
        are small differences of noisy outcomes (on the 64,000-customer synthetic campaign in
        bench/campaign.py, 100 × 7 leaves × 200 per leaf took every learner from 0.66-0.89
        to 0.85-0.98 of the oracle's true Qini, against 200 × 15 × 50). Early stopping is
        off, so a fit depends on the data and ``random_state`` only.
    n_folds : int
        Cross-fitting folds of `DRLearner` (2 to 10).
    propensity_clip : float
        Propensities are clipped to ``[clip, 1 − clip]`` before the `DRLearner` divides by them.
    """

    max_iter: int = 100
    learning_rate: float = 0.05
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 200
    l2_regularization: float = 1.0
    n_folds: int = 3
    propensity_clip: float = 0.01

    def __post_init__(self) -> None:
        for name, low in (("max_iter", 1), ("max_leaf_nodes", 2), ("min_samples_leaf", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"UpliftConfig.{name}={value!r}: use an integer >= {low}")
        if not isinstance(self.n_folds, int) or not 2 <= self.n_folds <= 10:
            raise ConfigError(f"UpliftConfig.n_folds={self.n_folds!r}: use an integer in [2, 10]")
        if not (_is_number(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ConfigError(
                f"UpliftConfig.learning_rate={self.learning_rate!r}: use a number in (0, 1]"
            )
        if not (_is_number(self.l2_regularization) and self.l2_regularization >= 0):
            raise ConfigError(
                f"UpliftConfig.l2_regularization={self.l2_regularization!r}: use a number >= 0"
            )
        if not (_is_number(self.propensity_clip) and 0 < self.propensity_clip < 0.5):
            raise ConfigError(
                f"UpliftConfig.propensity_clip={self.propensity_clip!r}: use a number in"
                " (0, 0.5), e.g. 0.01"
            )


class _MetaLearner(BaseEstimator):
    """Shared plumbing: input checks, feature encoding, base-model factories.

    Parameters
    ----------
    config : UpliftConfig or None
        Base-model settings; None means ``UpliftConfig()``.
    random_state : int or None
        Seed of every base model and of the cross-fitting folds (an int makes fits repeatable).

    Attributes
    ----------
    config_ : UpliftConfig
        The settings used.
    features_ : tuple of str
        Feature columns seen in `fit`; `predict` needs them too (extra columns are ignored).
    categories_ : dict of str to Index
        Categories learned per categorical column.
    """

    def __init__(self, config: UpliftConfig | None = None, random_state: int | None = 0) -> None:
        self.config = config
        self.random_state = random_state

    def fit(
        self,
        X: pd.DataFrame,
        treated: npt.ArrayLike,
        y: npt.ArrayLike,
        propensity: float | npt.ArrayLike | None = None,
    ):
        """Learn τ(x) from one experiment.

        Parameters
        ----------
        X : DataFrame
            Features, one row per customer (numeric, bool or categorical columns; NaN allowed).
        treated : array of bool (or 0/1)
            Whether each customer got the treatment.
        y : array of float
            Outcome (0/1 or an amount).
        propensity : float, array or None
            P(treated | x): a constant for a randomised test, one value per row, or None to
            learn it from ``X`` (used by `XLearner` and `DRLearner`).

        Returns
        -------
        self

        Raises
        ------
        ConfigError
            No feature columns, an all-missing or infinite feature, a bad propensity.
        CampaignLogError
            A missing arm, missing outcomes, unequal lengths.
        """
        config = UpliftConfig() if self.config is None else self.config
        if not isinstance(config, UpliftConfig):
            raise ConfigError(f"config={config!r}: pass an UpliftConfig or None")
        frame = _as_frame(X)
        t, outcome = _check_training(frame, treated, y, minimum=config.n_folds)
        p = _check_propensity(propensity, t.size)
        self.config_ = config
        self.features_, self.categories_ = _learn_encoding(frame)
        x = _encode(frame, self.features_, self.categories_)
        self._fit(x, t, outcome, p)
        return self

    def predict(self, X: pd.DataFrame, propensity: float | npt.ArrayLike | None = None):
        """Estimated effect τ(x) per row (outcome units, e.g. conversion probability).

        Parameters
        ----------
        X : DataFrame
            The columns seen in `fit`; unknown categories count as missing.
        propensity : float, array or None
            Only `XLearner` uses it, and needs it when it was fitted with per-row
            propensities (the new rows' propensities cannot be inferred from those).

        Returns
        -------
        ndarray of float
        """
        if not hasattr(self, "features_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted: call fit(X, treated, y) first"
            )
        frame = _as_frame(X)
        x = _encode(frame, self.features_, self.categories_)
        return self._predict(x, _check_propensity(propensity, len(frame)))

    # -- base models -----------------------------------------------------------------------

    def _mask(self) -> np.ndarray | None:
        mask = np.array([name in self.categories_ for name in self.features_])
        return mask if mask.any() else None

    def _booster(self, kind: type) -> HistGradientBoostingRegressor:
        """A base model of `kind` (regressor or classifier) with the shared settings."""
        c = self.config_
        return kind(
            max_iter=c.max_iter,
            learning_rate=c.learning_rate,
            max_leaf_nodes=c.max_leaf_nodes,
            min_samples_leaf=c.min_samples_leaf,
            l2_regularization=c.l2_regularization,
            categorical_features=self._mask(),
            early_stopping=False,
            random_state=self.random_state,
        )

    def _regressor(self) -> HistGradientBoostingRegressor:
        return self._booster(HistGradientBoostingRegressor)

    def _classifier(self) -> HistGradientBoostingClassifier:
        return self._booster(HistGradientBoostingClassifier)

    def _fit(self, x: np.ndarray, t: np.ndarray, y: np.ndarray, p: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict(self, x: np.ndarray, p: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


class TLearner(_MetaLearner):
    """Two outcome models, one per arm: ``τ(x) = μ1(x) − μ0(x)``.

    Attributes
    ----------
    control_model_, treated_model_ : HistGradientBoostingRegressor
        ``μ0`` and ``μ1``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"a": rng.normal(size=400)})
    >>> t = rng.random(400) < 0.5
    >>> y = (rng.random(400) < 0.2 + 0.3 * t * (X.a > 0)).astype(float)
    >>> TLearner().fit(X, t, y).predict(X).shape
    (400,)
    """

    def _fit(self, x, t, y, p) -> None:
        self.control_model_ = self._regressor().fit(x[~t], y[~t])
        self.treated_model_ = self._regressor().fit(x[t], y[t])

    def _predict(self, x, p) -> np.ndarray:
        return self.treated_model_.predict(x) - self.control_model_.predict(x)


class XLearner(_MetaLearner):
    """Cross-imputed effects blended by the propensity (Künzel et al. 2019).

    Stage 1 fits ``μ0``, ``μ1``; stage 2 regresses ``D1 = y − μ0(x)`` on the treated and
    ``D0 = μ1(x) − y`` on the control rows; ``τ = g·τ0 + (1 − g)·τ1`` with ``g`` the
    propensity, so the effect model fitted on the larger arm weighs more.

    Attributes
    ----------
    control_model_, treated_model_ : HistGradientBoostingRegressor
        ``μ0`` and ``μ1``.
    control_effect_model_, treated_effect_model_ : HistGradientBoostingRegressor
        ``τ0`` and ``τ1``.
    propensity_model_ : HistGradientBoostingClassifier or None
        ``g(x)`` when no propensity was given to `fit`.
    propensity_ : float or None
        The constant propensity given to `fit`.
    """

    def _fit(self, x, t, y, p) -> None:
        self.control_model_ = self._regressor().fit(x[~t], y[~t])
        self.treated_model_ = self._regressor().fit(x[t], y[t])
        d1 = y[t] - self.control_model_.predict(x[t])
        d0 = self.treated_model_.predict(x[~t]) - y[~t]
        self.treated_effect_model_ = self._regressor().fit(x[t], d1)
        self.control_effect_model_ = self._regressor().fit(x[~t], d0)
        self.propensity_model_ = self._classifier().fit(x, t) if p is None else None
        self.propensity_ = float(p[0]) if p is not None and np.all(p == p[0]) else None

    def _predict(self, x, p) -> np.ndarray:
        if p is None:
            if self.propensity_model_ is not None:
                p = self.propensity_model_.predict_proba(x)[:, 1]
            elif self.propensity_ is not None:
                p = np.full(len(x), self.propensity_)
            else:
                raise ConfigError(
                    "this XLearner was fitted with per-row propensities: pass propensity= for"
                    " the new rows to predict, or fit with propensity=None to learn it"
                )
        tau0 = self.control_effect_model_.predict(x)
        tau1 = self.treated_effect_model_.predict(x)
        return p * tau0 + (1.0 - p) * tau1


class DRLearner(_MetaLearner):
    """Doubly robust pseudo-outcomes regressed on ``x`` (Kennedy 2020).

    With ``config.n_folds`` cross-fitting folds, ``μ0``, ``μ1`` and ``e`` are fitted off-fold
    and ``ψ = μ1 − μ0 + T(y − μ1)/e − (1 − T)(y − μ0)/(1 − e)``, with ``e`` clipped to
    ``[clip, 1 − clip]``; the final model regresses ``ψ`` on ``x``. Off-fold fits keep each
    row's own noise out of its pseudo-outcome.

    Attributes
    ----------
    effect_model_ : HistGradientBoostingRegressor
        The regression of ``ψ`` on ``x``; `predict` uses only this.
    pseudo_outcome_mean_ : float
        Mean of ``ψ``: the doubly robust estimate of the average effect on the training rows.
    """

    def _fit(self, x, t, y, p) -> None:
        clip = self.config_.propensity_clip
        mu0, mu1 = np.empty(t.size), np.empty(t.size)
        e = np.empty(t.size) if p is None else p.copy()
        folds = StratifiedKFold(
            n_splits=self.config_.n_folds, shuffle=True, random_state=self.random_state
        )
        for train, held in folds.split(x, t):
            arm = t[train]
            mu0[held] = self._regressor().fit(x[train][~arm], y[train][~arm]).predict(x[held])
            mu1[held] = self._regressor().fit(x[train][arm], y[train][arm]).predict(x[held])
            if p is None:
                e[held] = self._classifier().fit(x[train], arm).predict_proba(x[held])[:, 1]
        e = np.clip(e, clip, 1.0 - clip)
        psi = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1.0 - e)
        self.pseudo_outcome_mean_ = float(psi.mean())
        self.effect_model_ = self._regressor().fit(x, psi)

    def _predict(self, x, p) -> np.ndarray:
        return self.effect_model_.predict(x)


#: Learner classes by the names the CLI and `compare_learners` use.
LEARNERS: dict[str, type[_MetaLearner]] = {"t": TLearner, "x": XLearner, "dr": DRLearner}


def build_learner(name: str, **kwargs) -> _MetaLearner:
    """A learner by name (``"t"``, ``"x"``, ``"dr"``), so options can pick one.

    Raises
    ------
    ConfigError
        An unknown name (the message lists the allowed ones) or an unknown argument.
    """
    if name not in LEARNERS:
        raise ConfigError(f"unknown uplift learner {name!r}: use one of {sorted(LEARNERS)}")
    try:
        return LEARNERS[name](**kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"learner {name!r}: {exc}; it takes config=UpliftConfig(...) and random_state"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class UpliftComparison:
    """Learners scored side by side on one held-out split.

    table : DataFrame
        One row per learner plus ``random``: ``learner, qini, qini_normalised, auuc,
        auuc_normalised, uplift_at_{k}pct..., fit_seconds`` (NaN for random).
    test_scores : DataFrame
        Held-out rows (index: the input frame's row labels) with ``treated``, ``outcome``
        and one predicted-τ column per learner.
    normalisation : str
        How Qini and AUUC are scaled; reports print it beside the table.
    models : dict
        The fitted learners by name.
    """

    table: pd.DataFrame
    test_scores: pd.DataFrame
    normalisation: str
    n_train: int
    n_test: int
    seed: int
    models: dict[str, _MetaLearner] = field(repr=False)

    def to_dict(self) -> dict:
        """The table and its context as plain JSON types (NaN → None; no per-row scores)."""
        rows = to_jsonable(self.table.to_dict(orient="records"))
        return {
            "normalisation": self.normalisation,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "seed": self.seed,
            "learners": rows,
        }


def compare_learners(
    frame: pd.DataFrame,
    treated: str | npt.ArrayLike,
    outcome: str | npt.ArrayLike,
    features: Sequence[str],
    learners: Sequence[str] = ("t", "x", "dr"),
    test_size: float = 0.3,
    seed: int = 0,
    propensity: str | float | npt.ArrayLike | None = None,
    *,
    config: UpliftConfig | None = None,
    ks: Sequence[float] = (0.1, 0.2, 0.3),
) -> UpliftComparison:
    """Fit several uplift learners on one split and score them on the held-out rows.

    Why one split for all: Qini numbers move with the sample, so learners are only
    comparable on the same rows; the ``random`` row shows what no model would score.

    Parameters
    ----------
    frame : DataFrame
        One row per customer of a randomised (or propensity-known) campaign.
    treated, outcome : str or array
        A column of ``frame`` or one value per row (treated: bool or 0/1).
    features : sequence of str
        Feature columns of ``frame``.
    learners : sequence of str
        Names from `LEARNERS`.
    test_size : float
        Held-out share, in (0, 1); the split is stratified by treatment.
    seed : int
        Seeds the split and every learner.
    propensity : str, float, array or None
        Known P(treated): a column, a constant or one value per row; None learns it.
    config : UpliftConfig or None
        Base-model settings for every learner.
    ks : sequence of float
        Shares for the uplift@k columns.

    Returns
    -------
    UpliftComparison

    Raises
    ------
    ConfigError
        Unknown learner or feature names, a bad ``test_size``.
    CampaignLogError
        A missing arm, an arm too small to split, missing outcomes.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    columns = _check_features(frame, features)
    names = list(learners)
    if not names:
        raise ConfigError(f"no learners given: use some of {sorted(LEARNERS)}")
    models = {name: build_learner(name, config=config, random_state=seed) for name in names}
    if not (_is_number(test_size) and 0 < test_size < 1):
        raise ConfigError(f"test_size={test_size!r}: use a share in (0, 1), e.g. 0.3")
    t = _column_or_array(frame, treated, "treated")
    y = _column_or_array(frame, outcome, "outcome")
    t, y = _check_training(frame, t, y, minimum=2)
    p = None
    if propensity is not None:
        p = (
            propensity
            if _is_number(propensity)
            else _column_or_array(frame, propensity, "propensity")
        )
        p = _check_propensity(p, t.size)
    try:
        train, test = train_test_split(
            np.arange(t.size), test_size=test_size, stratify=t, random_state=seed
        )
    except ValueError as exc:
        raise CampaignLogError(
            f"cannot split {t.size} rows ({int(t.sum())} treated) into train and test stratified"
            f" by treatment: {exc}; use more rows or another test_size"
        ) from None
    train, test = np.sort(train), np.sort(test)
    x = frame[columns]
    scores = pd.DataFrame(
        {"treated": t[test], "outcome": y[test]},
        index=pd.Index(frame.index[test], name=frame.index.name or "row"),
    )
    rows = []
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(x.iloc[train], t[train], y[train], None if p is None else p[train])
        seconds = time.perf_counter() - start
        tau = model.predict(x.iloc[test], None if p is None else p[test])
        scores[name] = tau
        metrics = qini.uplift_metrics(tau, t[test], y[test], ks)
        rows.append({"learner": name, **metrics, "fit_seconds": seconds})
    baseline = qini.random_targeting_baseline(t[test], y[test], ks)
    rows.append({"learner": "random", **baseline, "fit_seconds": math.nan})
    return UpliftComparison(
        table=pd.DataFrame(rows),
        test_scores=scores,
        normalisation=qini.NORMALISATION,
        n_train=int(train.size),
        n_test=int(test.size),
        seed=seed,
        models=models,
    )


# -- input checks and encoding -------------------------------------------------------------


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _as_frame(X: object) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, np.ndarray) and X.ndim == 2:
        return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    raise ConfigError(f"features must be a pandas DataFrame, got {type(X).__name__}")


def _check_features(frame: pd.DataFrame, features: Sequence[str]) -> list[str]:
    if isinstance(features, str):
        features = [features]
    columns = list(features)
    if not columns:
        raise ConfigError("no feature columns given: name at least one column of the frame")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"feature columns {missing} are not in the frame; available: {list(frame.columns)}"
        )
    return columns


def _column_or_array(frame: pd.DataFrame, value: object, what: str) -> np.ndarray:
    if isinstance(value, str):
        if value not in frame.columns:
            raise ConfigError(
                f"{what} column {value!r} is not in the frame; available: {list(frame.columns)}"
            )
        return frame[value].to_numpy()
    array = np.asarray(value)
    if array.shape != (len(frame),):
        raise CampaignLogError(
            f"{what} has shape {array.shape} but the frame has {len(frame)} rows:"
            " pass a column name or one value per row"
        )
    return array


def _check_training(
    frame: pd.DataFrame, treated: npt.ArrayLike, y: npt.ArrayLike, *, minimum: int
) -> tuple[np.ndarray, np.ndarray]:
    """Treated as bool and y as float, each arm with at least ``minimum`` rows."""
    t, y = np.asarray(treated), np.asarray(y)
    if t.shape != (len(frame),) or y.shape != (len(frame),):
        raise CampaignLogError(
            f"X has {len(frame)} rows, treated has shape {t.shape} and y {y.shape}:"
            " pass one treatment flag and one outcome per row"
        )
    t, y = qini._check_arms(t, y)
    n_t, n_c = int(t.sum()), int((~t).sum())
    if min(n_t, n_c) < minimum:
        raise CampaignLogError(
            f"{n_t} treated and {n_c} control rows: each arm needs at least {minimum}"
            " to fit an uplift learner; use more data"
        )
    return t, y


def _check_propensity(propensity: object, n: int) -> np.ndarray | None:
    if propensity is None:
        return None
    if _is_number(propensity):
        p = np.full(n, float(propensity))
    else:
        try:
            p = np.asarray(propensity, dtype=float)
        except (TypeError, ValueError):
            raise ConfigError(f"propensity must be numbers in (0, 1), got {propensity!r}") from None
        if p.shape != (n,):
            raise ConfigError(
                f"propensity has shape {p.shape} for {n} rows: pass one number or one per row"
            )
    if not np.all((p > 0) & (p < 1)):
        raise ConfigError(
            "propensity must lie strictly between 0 and 1 (P(treated | x)); got values from"
            f" {np.nanmin(p) if p.size else 'none'} to {np.nanmax(p) if p.size else 'none'}"
        )
    return p


def _is_categorical(series: pd.Series) -> bool:
    dtype = series.dtype
    return isinstance(dtype, pd.CategoricalDtype) or (
        not pd.api.types.is_bool_dtype(dtype)
        and (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype))
    )


def _learn_encoding(frame: pd.DataFrame) -> tuple[tuple[str, ...], dict[str, pd.Index]]:
    """Feature names and, per categorical column, its categories (most frequent first)."""
    if frame.shape[1] == 0:
        raise ConfigError("no feature columns: give the learner at least one feature")
    categories: dict[str, pd.Index] = {}
    for name in frame.columns:
        column = frame[name]
        if column.isna().all():
            raise ConfigError(
                f"feature column {name!r} is entirely missing in the training rows: drop it"
            )
        if _is_categorical(column):
            counts = column.astype("string").value_counts(dropna=True, sort=False)
            counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
            if counts.size > _MAX_CATEGORIES:
                warnings.warn(
                    f"feature column {name!r} has {counts.size} categories; the"
                    f" {counts.size - _MAX_CATEGORIES} rarest are treated as missing"
                    " (group them beforehand to keep them)",
                    DataQualityWarning,
                    stacklevel=3,
                )
            categories[str(name)] = pd.Index(counts.index[:_MAX_CATEGORIES], dtype="string")
        elif not (
            pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)
        ):
            raise ConfigError(
                f"feature column {name!r} has dtype {column.dtype}: use numbers, booleans or"
                " categories (convert dates to ages in days first)"
            )
    return tuple(str(c) for c in frame.columns), categories


def _encode(
    frame: pd.DataFrame, features: tuple[str, ...], categories: dict[str, pd.Index]
) -> np.ndarray:
    """A float matrix: numbers as they are, categories as codes, unknown values as NaN."""
    names = [str(c) for c in frame.columns]
    missing = [f for f in features if f not in names]
    if missing:
        raise ConfigError(
            f"feature columns {missing} seen in fit are not in these rows; available: {names}"
        )
    frame = frame.set_axis(names, axis=1)
    x = np.empty((len(frame), len(features)))
    for j, name in enumerate(features):
        column = frame[name]
        if name in categories:
            codes = categories[name].get_indexer(column.astype("string"))  # unknown, NA: -1
            x[:, j] = np.where(codes >= 0, codes, np.nan)
        else:
            try:
                x[:, j] = column.to_numpy(dtype=float, na_value=np.nan)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"feature column {name!r} was numeric in fit but holds {column.dtype}"
                    " values now: pass the same column types as in fit"
                ) from None
            if np.isinf(x[:, j]).any():
                raise ConfigError(
                    f"feature column {name!r} has infinite values: replace them (e.g. with"
                    " NaN, which the trees handle) first"
                )
    return x
