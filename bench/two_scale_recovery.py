"""Does the main model recover both time scales and the daily cycle? Synthetic truth.

`ebbtide synth --preset two-scale` simulates, per (user, category), interest that fades over
days (half-lives 1–10 days), session excitation that fades within hours (0.2–2 h), and a daily
cycle of amplitude 0.6 (plus a weekly one of 0.2), on China time. `neural` is fitted on the
whole log as a parameter-recovery fit (`RECOVERY_SETTINGS`: the likelihood to convergence, no
validation window, item head off); `decay` (one time scale) is fitted beside it. Per
category, the fitted half-lives are compared with the truth on the categories with at least
`--min-events` events: median of |fitted / true − 1|. The early warning is checked on the same
preset with 20% of users made to fade.

Bar (issue 16): interest half-lives within 20%, session half-lives within 30%, the daily
cycle's amplitude within 20%.

    python bench/two_scale_recovery.py [--users 1000] [--threads 2]

Writes bench/two_scale_recovery.json and the RESULTS.md section "Two time scales and the
daily cycle: recovery on synthetic truth".
"""

from __future__ import annotations

import argparse
import json
import math
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
from ebbtide.activate.segments import early_warning
from ebbtide.ingest import ingest_file
from ebbtide.metrics_core import roc_auc
from ebbtide.models.decay import DecayModel
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.store import EventStore
from ebbtide.synthetic import generate, two_scale_config, write_taobao_csv

HERE = Path(__file__).resolve().parent
TITLE = "Two time scales and the daily cycle: recovery on synthetic truth"
#: A parameter-recovery fit: the likelihood run to convergence on the whole log (no
#: validation window, no early stop, no item head, the rates learning 10× faster).
RECOVERY_SETTINGS = {
    "item_weight": 0.0,
    "item_epochs": 1,
    "validation_days": 0.0,
    "epochs": 15,
    "max_train_seconds": 1e9,
    "rate_lr_scale": 10.0,
    "time_zone": "Asia/Shanghai",
}


def recover(users: int, seed: int, min_events: int, neural: NeuralConfig) -> dict:
    """Fit both models on one two-scale log; the per-category errors and the cycle's."""
    cfg = two_scale_config(users=users, seed=seed)
    log = generate(cfg)
    truth = log.truth_categories.to_pandas().set_index("category_id")
    well = truth[truth.n_events >= min_events]
    cycle_truth = log.truth_cycle.to_pylist()[0]
    out: dict = {"events": log.events.num_rows, "categories": len(well), "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.csv"
        write_taobao_csv(log, path)
        with EventStore(Path(tmp) / "s.duckdb") as store:
            ingest_file(store, path, "taobao")
            cutoff = cfg.start + timedelta(days=cfg.days)
            clock = time.perf_counter()
            model = NeuralModel(neural).fit(store, cutoff=cutoff)
            seconds = time.perf_counter() - clock
            fitted = model.half_lives().set_index("category_id").loc[well.index]
            interest = fitted.interest_half_life_days / well.half_life_days - 1.0
            session = fitted.session_half_life_days / well.session_half_life_days - 1.0
            covered = (fitted.interest_low <= well.half_life_days) & (
                well.half_life_days <= fitted.interest_high
            )
            amplitude = model.cycle.daily_amplitude
            out["models"]["neural"] = {
                "interest_error": float(interest.abs().median()),
                "session_error": float(session.abs().median()),
                "interest_interval_coverage": float(covered.mean()),
                "daily_amplitude": amplitude,
                "daily_amplitude_error": abs(amplitude / cycle_truth["daily_amplitude"] - 1.0),
                "peak_hour": model.cycle.peak_hour,
                "fit_seconds": seconds,
                "per_category": pd.DataFrame(
                    {
                        "true_interest_days": well.half_life_days,
                        "fitted_interest_days": fitted.interest_half_life_days,
                        "interest_low": fitted.interest_low,
                        "interest_high": fitted.interest_high,
                        "true_session_hours": 24 * well.session_half_life_days,
                        "fitted_session_hours": 24 * fitted.session_half_life_days,
                    }
                )
                .reset_index()
                .to_dict("records"),
            }
            clock = time.perf_counter()
            decay = DecayModel().fit(store, cutoff=cutoff)
            seconds = time.perf_counter() - clock
            ids = np.asarray(decay.catalogue_.category_ids, dtype=object)
            half = pd.Series(math.log(2.0) / decay.delta_, index=ids[: len(decay.delta_)])
            error = half.loc[well.index] / well.half_life_days - 1.0
            session_error = half.loc[well.index] / well.session_half_life_days - 1.0
            out["models"]["decay"] = {
                "interest_error": float(error.abs().median()),
                "session_error": float(session_error.abs().median()),
                "fit_seconds": seconds,
            }
    out["truth_cycle"] = cycle_truth
    return out


def early_warning_auc(users: int, seed: int, neural: NeuralConfig) -> dict:
    """ROC-AUC of the early-warning rank against the users made to fade (20% of them, from
    60–90% of the window, intensity × 0.2): fitted at 60% (before any fade), ranked at the
    end."""
    cfg = two_scale_config(users=users, seed=seed, fading_share=0.2)
    log = generate(cfg)
    fading = log.truth_users.to_pandas().set_index("user_id")["fading"]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.csv"
        write_taobao_csv(log, path)
        with EventStore(Path(tmp) / "s.duckdb") as store:
            ingest_file(store, path, "taobao")
            before = cfg.start + timedelta(days=0.6 * cfg.days)
            at = cfg.start + timedelta(days=cfg.days)
            for name, model in (("neural", NeuralModel(neural)), ("decay", DecayModel())):
                model.fit(store, cutoff=before)
                table = early_warning(
                    model, store, before=before, at=at, horizon=timedelta(days=1), top=None
                )
                truth = fading.loc[table.user_id].to_numpy()
                out[name] = {
                    "auc": roc_auc(truth, -table["rank"].to_numpy()),
                    "p_return_change_auc": roc_auc(truth, -table.p_return_change.to_numpy()),
                    "users": len(table),
                    "fading": int(truth.sum()),
                }
                print("early warning", name, out[name], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--min-events", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    add_settings_option(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = {**RECOVERY_SETTINGS, **parse_settings(args.set)}
    neural = NeuralConfig(**settings)
    result = recover(args.users, args.seed, args.min_events, neural)
    result["early_warning"] = early_warning_auc(args.users, args.seed, neural)
    command = f"python bench/two_scale_recovery.py --users {args.users} --seed {args.seed}"
    command += settings_flags(args.set)
    payload = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "command": command,
        "settings": settings,
        **result,
    }
    (HERE / "two_scale_recovery.json").write_text(json.dumps(payload, indent=1, default=str))
    section = _section(payload)
    print(section)
    if not args.no_write:
        write_section(TITLE, section)


def _section(payload: dict) -> str:
    neural, decay = payload["models"]["neural"], payload["models"]["decay"]
    truth = payload["truth_cycle"]

    def mark(value: float, bar: float) -> str:
        return f"{value:.0%} ({'meets' if value <= bar else 'misses'} ≤ {bar:.0%})"

    lines = [
        f"## {TITLE}",
        "",
        f"- date: {payload['date']}; machine: {payload['machine']}, CPU only",
        f"- command: `{payload['command']}`",
        f"- data: `two_scale_config` ({payload['events']:,} events, 20 days, 30 categories);"
        f" {payload['categories']} categories with at least 500 events are compared",
        "- error: median over those categories of |fitted / true half-life − 1|; `decay` has"
        " one time scale, compared with each",
        f"- settings: `neural` {payload['settings']} (a parameter-recovery fit: the"
        " likelihood to convergence, not the defaults' early stop on a day-scale ranking);"
        " `decay` defaults",
        "",
        "| model | interest half-life | session half-life | daily amplitude | fit time |",
        "|---|---:|---:|---:|---:|",
        f"| neural | {mark(neural['interest_error'], 0.2)} | {mark(neural['session_error'], 0.3)}"
        f" | {neural['daily_amplitude']:.3f} vs {truth['daily_amplitude']:.3f}:"
        f" {mark(neural['daily_amplitude_error'], 0.2)} | {neural['fit_seconds']:.0f} s |",
        f"| decay | {decay['interest_error']:.0%} | {decay['session_error']:.0%} | – |"
        f" {decay['fit_seconds']:.0f} s |",
        "",
        f"The daily cycle peaks at {neural['peak_hour']:.1f} h local in the fit"
        f" ({truth['peak_hour']:.0f} h in the truth). The 95% intervals of the interest"
        f" half-lives cover the truth in {neural['interest_interval_coverage']:.0%} of the"
        " categories (they hold the rest of the network at its fit, so they are narrow).",
        "",
        "What moved the interest error on this log (400 users, seed 2; runs of 2026-12-02,"
        " by hand with `--set`): the defaults' early stop on the validation window's"
        " ranking 52%; the same with rates at 10× 59% (session 9%); fitted to convergence"
        " with a running long-run level (events so far over time so far) 70%, with one"
        " level per pair over the training period 62%; the GRU's modulation penalised"
        " 100× or its background switched off changed nothing (62%, 57%); reading 200"
        " events of context before each chunk 37%, and chunks of 1,000 events 30%. The"
        " rest of the gap is heavy users' older events, which no chunk reads: the sums"
        " need carrying across chunks (or a per-pair recursion) to see the whole history.",
        "",
        "Early warning on the same preset with 20% of users made to fade (from 60–90% of the"
        " window their intensity × 0.2; models fitted at 60%, users ranked at the end):",
        "",
        "| model | ROC-AUC of the rank (bar ≥ 0.8) | by the P(return) change alone |",
        "|---|---:|---:|",
        *(
            f"| {name} | {row['auc']:.3f} | {row['p_return_change_auc']:.3f} |"
            for name, row in payload["early_warning"].items()
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
