"""Issue 16's test protocol on the Taobao slice, fixed before any of its numbers were read.

The protocol (do not change it to suit a result):

- **cuts**: 2017-11-29, 11-30, 12-01 and 12-02, each at 16:00 UTC (midnight in China), each
  followed by a 24 h window; the test is the mean over the four cuts;
- **models**: popular, btyd, gbdt, decay, neural, each refitted at every cut on the events
  before it with its defaults (neural: the shop's time zone, Asia/Shanghai);
- **metrics**: `ebbtide.evaluate.temporal.evaluate_model`'s table (the numbers `ebbtide
  evaluate` prints), per cut and averaged;
- **paired bootstrap** of ``neural − best baseline`` (the non-neural model with the best
  mean on that metric) on return, buy, engage and reactivation ROC-AUC: users resampled
  within each cut (a pair metric takes all the pairs of each drawn user), the same draw
  for both models, the mean-over-cuts difference per replicate, its 95 % percentile
  interval. Bar: neural ahead by >= 0.01 on engage and on reactivation AUC, not behind
  on buy AUC;
- **calibration in time**: per cut, the largest gap over the window between the observed
  return curve (share of users whose first event after the cut came within h) and the
  mean forecast ``mean_u P(return within h)``, h every 15 minutes. Bar: under 0.05 at
  every cut for neural.

    python bench/interest_protocol.py [--models ...] [--bootstrap 1000] [--threads 2]
    python bench/interest_protocol.py --smoke    # popular,decay; two cuts; B=50

Cost on 2 shared cores: decay fits in under a second; gbdt fits in 1 to 3 minutes a cut and
its curve (96 p_return calls, features rebuilt per horizon) takes another 1.5 minutes a cut
(``--grid-minutes 30`` halves that); neural's curve reuses its cached states (seconds). The
bootstrap of 1,000 replicates takes seconds.

Writes bench/interest_protocol.json, bench/interest_protocol_calibration.png and the
RESULTS.md section "Interest decay protocol: Taobao, four cuts fixed in advance"
(--smoke: *_smoke files, RESULTS.md untouched).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from _results import (
    add_settings_option,
    machine,
    parse_settings,
    settings_flags,
    write_section,
)
from ebbtide.datasets import taobao_sample_path
from ebbtide.evaluate.temporal import METRICS, HoldoutTargets, evaluate_model, holdout_targets
from ebbtide.features.history import History, snapshot
from ebbtide.ingest import ingest_file
from ebbtide.metrics_core import roc_auc
from ebbtide.models.base import Model
from ebbtide.models.scoring import build_model
from ebbtide.store import EventStore

HERE = Path(__file__).resolve().parent
TITLE = "Interest decay protocol: Taobao, four cuts fixed in advance"
CUTS = "2017-11-29T16:00Z,2017-11-30T16:00Z,2017-12-01T16:00Z,2017-12-02T16:00Z"
MODELS = "popular,btyd,gbdt,decay,neural"
HORIZON = timedelta(hours=24)
K = 20
#: Settings that differ from a family's defaults (the shop's time zone for neural's cycle).
SETTINGS = {"neural": {"time_zone": "Asia/Shanghai"}}
#: The bootstrapped AUCs and issue 16's bar on ``candidate − best baseline`` (None: no bar).
BARS = {"return_auc": None, "buy_auc": 0.0, "engage_auc": 0.01, "reactivation_auc": 0.01}
#: Issue 16's bar on the largest gap between the observed and forecast return curves.
CALIBRATION_BAR = 0.05
#: What each model's settings were chosen on: filled by hand, kept across reruns.
CHOICES = """\
What each choice was made on (never on the four test cuts):

- **validation cuts**: 2017-11-27 and 11-28 at 16:00 UTC, 24 h each, inside every test
  cut's training period (`python bench/interest_protocol.py --cuts
  2017-11-27T16:00Z,2017-11-28T16:00Z --tag validation_lr1 --models neural` and the same
  with `--set rate_lr_scale=10 --models btyd,gbdt,decay,neural --tag validation_lr10`);
  means over the two: neural with `rate_lr_scale` 1 return 0.705, buy 0.594, engage
  0.698, reactivation 0.642; with 10: 0.704, 0.576, 0.691, 0.644, so the default stays
  1 (gbdt there: 0.708, 0.613, 0.711, 0.712; decay 0.630, 0.607, 0.699, 0.558);
- **return calibration**: fitted on neural's own validation window (the last day before
  each cut) over horizons from an hour to the window; on the 11-28 validation cut the
  largest gap between the forecast and the observed return curve fell from 0.47 (the
  calibration read at 24 h only) to 0.079. Keeping the process's own course within the
  window gave 0.077 there but ranked 1-day returners worse on the long synthetic log of
  tests/models/test_neural_long_horizon.py, so it was dropped. Six daily harmonics
  instead of three (and a floor of 0.05) gave 0.087 there, so the cycle keeps three;
- **the level's fading in a silence (θ)**: added for the long synthetic log above, where
  half the users stop and a level that never faded ranked 30-day returners at 0.73
  against recency's 0.93; its start (a 3-day half-life, learning at 10 × the rates'
  step) was chosen on that log, not on Taobao;
- **structure** (two scales split at 12 h, the long-run level as one count per pair,
  200 events of context per chunk) was chosen on synthetic truth
  (`bench/two_scale_recovery.py`), where each step moved the interest half-lives towards
  the truth, not on Taobao;
- every other setting is the family's default as it was before this run (epochs, learning
  rates, the validation window's rule, the patience)."""
#: Metrics where lower is better; every other metric is better higher.
LOWER = ("ece", "brier", "log_loss")
#: Rows shown for information, never bold.
TIMINGS = ("fit_seconds", "score_seconds", "curve_seconds")


# ------------------------------------------------------------------------ the pure math


def weighted_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of (y, score) under each row of `weights` (shape (B, n)), vectorised.

    Each (positive, negative) pair counts with the product of their weights, a tie one
    half: unit weights give `roc_auc`, integer weights give `roc_auc` of every row
    repeated that many times (a bootstrap draw). NaN where a row leaves one class only.
    """
    y = np.asarray(y, dtype=bool)
    s = np.asarray(score, dtype=float)
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    w = np.atleast_2d(np.asarray(weights, dtype=float))[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # groups of tied scores
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each group
    num = (pos * (below + 0.5 * neg)).sum(axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def auc_replicates(
    y: np.ndarray, score: np.ndarray, owner: np.ndarray, counts: np.ndarray, chunk: int = 100
) -> np.ndarray:
    """The AUC in each bootstrap replicate: row i weighs ``counts[b, owner[i]]``, the times
    its user was drawn in replicate b (so a drawn user brings all their rows)."""
    out = np.empty(counts.shape[0])
    for lo in range(0, counts.shape[0], chunk):
        out[lo : lo + chunk] = weighted_auc(y, score, counts[lo : lo + chunk][:, owner])
    return out


def draw_users(n_users: int, n_replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_users) counts: how often each user is drawn, n_users draws with replacement."""
    return rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_replicates)


def observed_return_curve(
    days_to_return: np.ndarray, returned: np.ndarray, hours: np.ndarray
) -> np.ndarray:
    """Share of users whose first event after the cut came within h, for each h in `hours`.

    This is the Kaplan–Meier estimate of P(T < h): every user is followed through the
    whole window, so no one is censored before its end and Kaplan–Meier reduces to the
    empirical distribution function of T (users who did not return have T = ∞).
    """
    t = np.sort(np.where(returned, np.asarray(days_to_return, dtype=float) * 24.0, np.inf))
    return np.searchsorted(t, hours, side="left") / t.size


def max_gap(observed: np.ndarray, forecast: np.ndarray, hours: np.ndarray) -> dict:
    """The largest |observed − forecast| over the grid, where it is, and its sign."""
    diff = np.asarray(forecast, dtype=float) - np.asarray(observed, dtype=float)
    i = int(np.argmax(np.abs(diff)))
    return {
        "gap": float(abs(diff[i])),
        "at_hours": float(hours[i]),
        "forecast_minus_observed": float(diff[i]),
    }


def self_check(rng: np.random.Generator) -> list[str]:
    """Hand-sized checks of the pure functions against `roc_auc` and worked examples."""
    lines = []
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.2])  # ties across classes
    ones = weighted_auc(y, s, np.ones((1, y.size)))[0]
    assert abs(ones - roc_auc(y, s)) < 1e-12, (ones, roc_auc(y, s))
    counts = np.array([[2, 0, 1, 3, 1, 0, 1, 1]])
    rep = weighted_auc(y, s, counts)[0]
    expanded = roc_auc(np.repeat(y, counts[0]), np.repeat(s, counts[0]))
    assert abs(rep - expanded) < 1e-12, (rep, expanded)
    lines.append(f"weighted AUC: unit weights {ones:.6f} = roc_auc; counts {rep:.6f} = roc_auc"
                 f" of the repeated rows {expanded:.6f}")  # fmt: skip
    curve = observed_return_curve(
        np.array([0.1, 0.5, 1.0, 0.25]), np.array([True, True, False, True]),
        np.array([0.0, 2.4, 6.0, 12.0, 24.0]),
    )  # fmt: skip
    # first events at 2.4 h, 12 h, 6 h and one user silent: P(T < h) = 0, 0, 1/4, 2/4, 3/4
    assert np.allclose(curve, [0, 0, 0.25, 0.5, 0.75]), curve
    gap = max_gap(curve, np.array([0.0, 0.1, 0.2, 0.6, 0.7]), np.array([0.0, 2.4, 6, 12, 24]))
    assert abs(gap["gap"] - 0.1) < 1e-12 and gap["at_hours"] in (2.4, 12.0), gap
    lines.append(f"observed curve {curve.tolist()} (hand: [0, 0, .25, .5, .75]); max gap {gap}")
    draws = draw_users(5, 3, rng)
    assert (draws.sum(axis=1) == 5).all()
    return lines


# --------------------------------------------------------------------- running the cuts


class Recorder:
    """A fitted model whose p_return, p_buy and interest answers are kept as they are given:
    `evaluate_model` asks each once, and the bootstrap reuses the very same numbers."""

    KEPT = ("p_return", "p_buy", "interest")

    def __init__(self, model: Model) -> None:
        self.model = model
        self.kept: dict[str, pd.DataFrame] = {}

    def __getattr__(self, name: str):
        attr = getattr(self.model, name)
        if name not in self.KEPT:
            return attr

        def keep(*args, **kwargs):
            self.kept[name] = attr(*args, **kwargs)
            return self.kept[name]

        return keep


def _aligned(users: pd.DataFrame, answer: pd.DataFrame, column: str) -> np.ndarray:
    values = users[["user_id"]].merge(answer, on="user_id", how="left")[column]
    assert not values.isna().any(), f"{column} missing for some users"
    return np.clip(values.to_numpy(dtype=float), 0.0, 1.0)  # as evaluate_model scores it


def _predictions(kept: dict, targets: HoldoutTargets) -> dict[str, np.ndarray]:
    """The raw answers in the targets' order: per user p_return, p_buy; per pair p_engage."""
    out = {}
    if "p_return" in kept:
        out["p_return"] = _aligned(targets.users, kept["p_return"], "p_return")
    if "p_buy" in kept:
        out["p_buy"] = _aligned(targets.users, kept["p_buy"], "p_buy")
    if "interest" in kept and not targets.pairs.empty:
        pairs = targets.pairs.merge(
            kept["interest"][["user_id", "category_id", "p_engage"]],
            on=["user_id", "category_id"],
            how="left",
        )
        out["p_engage"] = pairs["p_engage"].fillna(0.0).to_numpy()  # as evaluate_model
    return out


def _forecast_curve(model: Model, history: History, users: pd.DataFrame, hours: np.ndarray):
    """``mean_u P(return within h)`` over the users with history, for each h > 0."""
    curve = []
    for h in hours:
        if h <= 0:
            curve.append(0.0)
            continue
        p = model.p_return(history, horizon=timedelta(hours=float(h)))
        curve.append(float(_aligned(users, p, "p_return").mean()))
    return np.array(curve)


def run_cut(
    store: EventStore, cut: datetime, names: list[str], hours: np.ndarray
) -> tuple[dict, dict]:
    """Fit every model at `cut`; the JSON record of the cut and the raw predictions."""
    targets = holdout_targets(store, cutoff=cut, horizon=HORIZON)
    history = snapshot(store, at=cut)
    users = targets.users
    owner = pd.Index(users["user_id"]).get_indexer(targets.pairs["user_id"])
    assert (owner >= 0).all(), "a pair's user has no history"
    raw = {
        "returned": users["returned"].to_numpy(dtype=bool),
        "bought": users["bought"].to_numpy(dtype=bool),
        "engaged": targets.pairs["engaged"].to_numpy(dtype=bool),
        "dormant": targets.pairs["dormant"].to_numpy(dtype=bool),
        "owner": owner,
        "models": {},
    }
    observed = observed_return_curve(users["days_to_return"].to_numpy(), raw["returned"], hours)
    record = {
        "cutoff": cut.isoformat(),
        "split": targets.describe(),
        "observed_curve": observed.tolist(),
        "models": [],
    }
    for name in names:
        model = build_model(name, **SETTINGS.get(name, {}))
        print(f"  {name}: fitting", flush=True)
        clock = time.perf_counter()
        model.fit(history)
        fit_seconds = time.perf_counter() - clock
        recorder = Recorder(model)
        clock = time.perf_counter()
        row = evaluate_model(recorder, history, targets, k=K)  # type: ignore[arg-type]
        row |= {"fit_seconds": fit_seconds, "score_seconds": time.perf_counter() - clock}
        preds = _predictions(recorder.kept, targets)
        raw["models"][name] = preds
        _check_point_auc(raw, preds, row, name)
        entry = {"model": name, "config": dataclasses.asdict(model.config), "metrics": row}
        if "p_return" in model.answers:
            clock = time.perf_counter()
            forecast = _forecast_curve(model, history, users, hours)
            row["curve_seconds"] = time.perf_counter() - clock
            entry["forecast_curve"] = forecast.tolist()
            entry["calibration"] = max_gap(observed, forecast, hours)
        record["models"].append(entry)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k in BARS or "seconds" in k)
        print(f"  {name}: {shown}", flush=True)
    return record, raw


#: The bootstrapped metric → (prediction, outcome, rows: users or pairs, dormant only).
SOURCES = {
    "return_auc": ("p_return", "returned", False),
    "buy_auc": ("p_buy", "bought", False),
    "engage_auc": ("p_engage", "engaged", False),
    "reactivation_auc": ("p_engage", "engaged", True),
}


def _auc_inputs(raw: dict, model: str, metric: str):
    """(y, score, owner) of `metric` for `model` at one cut, or None if it does not answer."""
    column, outcome, dormant_only = SOURCES[metric]
    score = raw["models"][model].get(column)
    if score is None:
        return None
    y = raw[outcome]
    owner = raw["owner"] if column == "p_engage" else np.arange(y.size)
    if dormant_only:
        keep = raw["dormant"]
        y, score, owner = y[keep], score[keep], owner[keep]
    return y, score, owner


def _check_point_auc(raw: dict, preds: dict, row: dict, name: str) -> None:
    """The bootstrap's AUC with every user drawn once is evaluate_model's number."""
    raw_one = {**raw, "models": {name: preds}}
    for metric in SOURCES:
        inputs = _auc_inputs(raw_one, name, metric)
        if inputs is None or metric not in row:
            continue
        y, score, _ = inputs
        mine = weighted_auc(y, score, np.ones((1, y.size)))[0]
        assert abs(mine - row[metric]) < 1e-9 or (mine != mine and row[metric] != row[metric]), (
            name, metric, mine, row[metric],
        )  # fmt: skip


def paired_bootstrap(
    raws: list[dict], means: pd.DataFrame, candidate: str, n_replicates: int, seed: int
) -> tuple[list[dict], list[str]]:
    """``candidate − best baseline`` per bootstrapped AUC: point difference, 95 % interval."""
    rng = np.random.default_rng(seed)
    draws = [draw_users(raw["returned"].size, n_replicates, rng) for raw in raws]
    checks = []
    results = []
    for metric, bar in BARS.items():
        if metric not in means.index or candidate not in means.columns:
            continue
        # only models that answer at every cut: a difference needs both at each
        everywhere = [m for m in means.columns if all(_auc_inputs(raw, m, metric) for raw in raws)]
        baselines = means.loc[metric, everywhere].drop(candidate, errors="ignore").dropna()
        if baselines.empty or candidate not in everywhere:
            results.append({"metric": metric, "candidate": candidate, "baseline": None,
                            "note": "no baseline answers this"})  # fmt: skip
            continue
        base = str(baselines.idxmax())
        point, reps = [], []
        for raw, counts in zip(raws, draws, strict=True):
            cand_in, base_in = _auc_inputs(raw, candidate, metric), _auc_inputs(raw, base, metric)
            y, s_c, owner = cand_in
            s_b = base_in[1]
            point.append(roc_auc(y, s_c) - roc_auc(y, s_b))
            reps.append(
                auc_replicates(y, s_c, owner, counts) - auc_replicates(y, s_b, owner, counts)
            )
            if raw is raws[0]:  # replicate 0 by hand: explicit resample, roc_auc
                rows = np.repeat(np.arange(y.size), counts[0][owner])
                by_hand = roc_auc(y[rows], s_c[rows]) - roc_auc(y[rows], s_b[rows])
                assert abs(by_hand - reps[-1][0]) < 1e-9, (metric, by_hand, reps[-1][0])
                checks.append(f"{metric} cut 1 replicate 0: vectorised {reps[-1][0]:+.6f},"
                              f" explicit resample + roc_auc {by_hand:+.6f}")  # fmt: skip
        diffs = np.mean(reps, axis=0)  # mean over cuts, per replicate
        low, high = np.nanpercentile(diffs, [2.5, 97.5])
        difference = float(np.mean(point))
        result = {
            "metric": metric,
            "candidate": candidate,
            "baseline": base,
            "difference": difference,
            "per_cut_difference": [float(d) for d in point],
            "low": float(low),
            "high": float(high),
            "replicates": n_replicates,
            "nan_replicates": int(np.isnan(diffs).sum()),
            "bar": bar,
        }
        if bar is not None:
            result["holds"] = difference >= bar
            result["interval"] = "clear" if low >= bar else "short" if high < bar else "straddles"
        results.append(result)
    return results, checks


# ----------------------------------------------------------------------------- output


def _long(runs: list[dict]) -> pd.DataFrame:
    rows = []
    for run in runs:
        for entry in run["models"]:
            for metric, value in entry["metrics"].items():
                if isinstance(value, int | float) and value == value:
                    rows.append(
                        {"cutoff": run["cutoff"], "model": entry["model"], "metric": metric,
                         "v": float(value)}
                    )  # fmt: skip
    return pd.DataFrame(rows)


def _means(long: pd.DataFrame) -> pd.DataFrame:
    """Metric × model: the mean over cuts."""
    return long.pivot_table(index="metric", columns="model", values="v", aggfunc="mean")


def _lower(metric: str) -> bool:
    return any(part in metric for part in LOWER)


def _metric_table(payload: dict) -> list[str]:
    long = _long(payload["runs"])
    models = payload["models"]
    order = [m for m in (*METRICS, "curve_seconds") if m in set(long["metric"])]
    lines = ["| metric | " + " | ".join(models) + " |", "|---|" + "---:|" * len(models)]
    for metric in order:
        table = long[long["metric"] == metric].pivot_table(
            index="cutoff", columns="model", values="v"
        )
        means = table.mean()
        best = None
        if metric not in TIMINGS:
            best = means.idxmin() if _lower(metric) else means.idxmax()
        digits = 1 if metric in TIMINGS else 3
        cells = []
        for model in models:
            if model not in table.columns:
                cells.append("–")
                continue
            col = table[model]
            per_cut = ", ".join("–" if v != v else f"{v:.{digits}f}" for v in col)
            text = f"{col.mean():.{digits}f} [{per_cut}]"
            cells.append(f"**{text}**" if model == best else text)
        arrow = "" if metric in TIMINGS else " ↓" if _lower(metric) else " ↑"
        lines.append(f"| {metric}{arrow} | " + " | ".join(cells) + " |")
    return lines


def _settings_line(payload: dict) -> str:
    changed = []
    for name in payload["models"]:
        extra = SETTINGS.get(name)
        if extra:
            changed.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    rest = f", except {'; '.join(changed)}" if changed else ""
    return f"- settings: every family's defaults (seed 0){rest}"


def _section(payload: dict) -> str:
    cuts = [run["cutoff"] for run in payload["runs"]]
    candidate = payload["candidate"]
    lines = [
        f"## {TITLE}",
        "",
        "The protocol below (cuts, window, models and their settings, metrics, bootstrap,"
        " bars) was fixed in issue 16 before any of these numbers were read; it is not tuned"
        " to them.",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}, CPU only",
        f"- command: `{payload['command']}`",
        f"- cuts: {', '.join(c[:16] for c in cuts)} UTC (midnight in China), each followed by"
        " a 24 h window; every model refitted at each cut on the events before it; the test"
        " is the mean over the cuts",
        _settings_line(payload),
        "",
        CHOICES,
        "",
        "| cut (UTC) | users | returned | bought | pairs | dormant pairs | engaged pairs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in payload["runs"]:
        s = run["split"]
        lines.append(
            f"| {run['cutoff'][:16]} | {s['users']:,} | {s['returned']:.1%} | {s['bought']:.1%}"
            f" | {s['pairs']:,} | {s['dormant_pairs']:,} | {s['engaged_pairs']:.1%} |"
        )
    lines += [
        "",
        "### Holdout metrics",
        "",
        "Cell: mean over cuts [per-cut values, in cut order]; **bold**: best mean; –: the"
        f" model does not answer. recall/ndcg at k={K} over the whole catalogue; ECE over 10"
        " equal-width bins; seconds on the machine above.",
        "",
        *_metric_table(payload),
        "",
        f"### {candidate} − best baseline, paired bootstrap",
        "",
        f"Best baseline: the model other than {candidate} with the best mean on the metric."
        f" Users resampled with replacement within each cut ({payload['bootstrap']} replicates,"
        " seed 0; a pair metric takes every pair of each drawn user), the same draw for both"
        " models; each replicate's difference is the mean over cuts; interval: 2.5th–97.5th"
        " percentile. Bar (issue 16): ahead by >= 0.01 on engage and reactivation AUC, not"
        " behind (>= 0) on buy AUC. holds: the difference meets the bar; interval: clear ="
        " its low end meets the bar too, short = its high end is below the bar, straddles ="
        " neither.",
        "",
        "| metric | best baseline | difference | 95% interval | per cut | bar | holds | interval |",
        "|---|---|---:|---|---|---:|---|---|",
    ]
    for r in payload["bootstrap_results"]:
        if r.get("baseline") is None:
            lines.append(f"| {r['metric']} | – | – | – | – | – | – | {r['note']} |")
            continue
        bar = "–" if r["bar"] is None else f"{r['bar']:+.2f}"
        holds = "–" if r["bar"] is None else ("yes" if r["holds"] else "**no**")
        per_cut = ", ".join(f"{d:+.3f}" for d in r["per_cut_difference"])
        lines.append(
            f"| {r['metric']} | {r['baseline']} | {r['difference']:+.4f} |"
            f" [{r['low']:+.4f}, {r['high']:+.4f}] | {per_cut} | {bar} | {holds} |"
            f" {r.get('interval', '–')} |"
        )
    if not payload["bootstrap_results"]:
        lines.append(f"| – | {candidate} not run | – | – | – | – | – | – |")
    lines += [
        "",
        "### Calibration in time",
        "",
        "Largest |observed − forecast| over the window, per cut, of the return curve: observed"
        " = the share of users with history whose first event after the cut came within h"
        " (Kaplan–Meier, which here is the empirical distribution function: every user is"
        " followed through the whole 24 h window, so no one is censored before its end);"
        " forecast = the mean over the same users of p_return at horizon h; h every"
        f" {payload['grid_minutes']:g} minutes. In brackets: the hour of the largest gap and"
        f" its sign (+: forecast above observed). Bar: under {CALIBRATION_BAR} at every cut"
        f" for {candidate}.",
        "",
        "| model | " + " | ".join(c[5:16] for c in cuts) + " | largest | bar |",
        "|---|" + "---:|" * len(cuts) + "---:|---|",
    ]
    for name in payload["models"]:
        gaps = []
        for run in payload["runs"]:
            entry = next(e for e in run["models"] if e["model"] == name)
            gaps.append(entry.get("calibration"))
        if all(g is None for g in gaps):
            continue
        cells = ["–" if g is None else _gap_cell(g) for g in gaps]
        largest = max(g["gap"] for g in gaps if g is not None)
        bar = ("yes" if largest < CALIBRATION_BAR else "**no**") if name == candidate else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {largest:.3f} | {bar} |")
    lines += ["", f"Curves: `{payload['figure']}` (observed vs {candidate}, per cut).", ""]
    return "\n".join(lines)


def _gap_cell(gap: dict) -> str:
    sign = "+" if gap["forecast_minus_observed"] > 0 else "−"
    return f"{gap['gap']:.3f} ({gap['at_hours']:.1f} h, {sign})"


def _figure(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = payload["runs"]
    hours = np.array(payload["grid_hours"])
    candidate = payload["candidate"]
    cols = 2 if len(runs) > 1 else 1
    rows_n = (len(runs) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(5 * cols, 3.6 * rows_n), squeeze=False)
    for ax, run in zip(axes.flat, runs, strict=False):
        ax.plot(hours, run["observed_curve"], color="black", label="observed")
        entry = next((e for e in run["models"] if e["model"] == candidate), None)
        if entry is not None and "forecast_curve" in entry:
            gap = entry["calibration"]["gap"]
            ax.plot(
                hours, entry["forecast_curve"], color="C0", label=f"{candidate} (gap {gap:.3f})"
            )
        ax.set_title(f"cut {run['cutoff'][:16]} UTC")
        ax.set_xlabel("hours after the cut")
        ax.set_ylabel("P(returned within h)")
        ax.set_xlim(0, hours[-1])
        ax.set_ylim(0, None)
        ax.legend(loc="lower right")
    for ax in axes.flat[len(runs) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help=f"comma-separated (default {MODELS})")
    parser.add_argument("--cuts", default=None, help="comma-separated ISO instants")
    parser.add_argument("--bootstrap", type=int, default=None, help="replicates (1000)")
    parser.add_argument("--grid-minutes", type=float, default=15.0, help="curve grid step")
    parser.add_argument("--candidate", default=None, help="the model against the best baseline")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md as it is")
    parser.add_argument(
        "--tag",
        default="",
        help="suffix of the output files (a validation run: --tag validation); leaves RESULTS.md",
    )
    add_settings_option(parser)
    parser.add_argument(
        "--smoke", action="store_true",
        help="popular,decay on the first two cuts, B=50, decay as the candidate; writes"
        " *_smoke files and leaves RESULTS.md",
    )  # fmt: skip
    args = parser.parse_args()
    smoke = args.smoke
    models = (args.models or ("popular,decay" if smoke else MODELS)).split(",")
    cut_text = args.cuts or (",".join(CUTS.split(",")[:2]) if smoke else CUTS)
    n_replicates = args.bootstrap or (50 if smoke else 1000)
    candidate = args.candidate or ("decay" if smoke else "neural")
    torch.set_num_threads(args.threads)
    SETTINGS["neural"] = {**SETTINGS["neural"], **parse_settings(args.set)}
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for line in self_check(rng):
        print(f"self-check: {line}")

    cuts = [datetime.fromisoformat(c).astimezone(UTC) for c in cut_text.split(",")]
    steps = round(24 * 60 / args.grid_minutes)
    hours = np.linspace(0.0, 24.0, steps + 1)
    runs, raws = [], []
    with tempfile.TemporaryDirectory() as folder, EventStore(Path(folder) / "s.duckdb") as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        for cut in cuts:
            print(f"cut-off {cut:%Y-%m-%d %H:%M} UTC", flush=True)
            record, raw = run_cut(store, cut, models, hours)
            runs.append(record)
            raws.append(raw)

    means = _means(_long(runs))
    clock = time.perf_counter()
    results, checks = (
        paired_bootstrap(raws, means, candidate, n_replicates, seed=0)
        if candidate in models
        else ([], [])
    )
    bootstrap_seconds = time.perf_counter() - clock
    for line in checks:
        print(f"self-check: {line}")
    print(f"bootstrap: {n_replicates} replicates in {bootstrap_seconds:.1f} s")

    suffix = "_smoke" if smoke else (f"_{args.tag}" if args.tag else "")
    out = HERE / f"interest_protocol{suffix}.json"
    figure = HERE / f"interest_protocol{suffix}_calibration.png"
    command = "python bench/interest_protocol.py" + (" --smoke" if smoke else "")
    command += "".join(
        f" {flag} {value}"
        for flag, value, given in (
            ("--models", ",".join(models), args.models),
            ("--cuts", cut_text, args.cuts),
            ("--bootstrap", n_replicates, args.bootstrap),
            ("--grid-minutes", f"{args.grid_minutes:g}", args.grid_minutes != 15.0),
            ("--candidate", candidate, args.candidate),
            ("--tag", args.tag, args.tag),
        )
        if (given or not smoke) and value != ""
    ) + settings_flags(args.set)
    payload = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "command": command,
        "protocol": "issue 16, fixed before the numbers were read",
        "models": models,
        "settings": {name: SETTINGS.get(name, {}) for name in models},
        "candidate": candidate,
        "horizon_hours": HORIZON / timedelta(hours=1),
        "k": K,
        "bootstrap": n_replicates,
        "bootstrap_seed": 0,
        "bootstrap_seconds": bootstrap_seconds,
        "grid_minutes": args.grid_minutes,
        "grid_hours": hours.tolist(),
        "figure": figure.relative_to(HERE.parent).as_posix(),
        "runs": runs,
        "means": {m: means.loc[m].dropna().to_dict() for m in means.index},
        "bootstrap_results": results,
        "calibration_bar": CALIBRATION_BAR,
        "seconds": time.perf_counter() - started,
    }
    out.write_text(json.dumps(payload, indent=1, default=str))
    print(f"wrote {out}")
    _figure(payload, figure)
    section = _section(payload)
    print(section)
    if not (args.no_write or smoke or args.tag):
        write_section(TITLE, section)
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
