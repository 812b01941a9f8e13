"""Do the models recover known interest half-lives? Synthetic Hawkes data, known truth.

`ebbtide synth` draws a per-category decay ``δ_c`` (half-lives log-uniform on 0.25-5 days)
and simulates per-(user, category) self-exciting processes. Each family is fitted on the
whole log; its per-category half-life is compared with the truth on the categories with at
least 500 events (median absolute relative error; the bar is 20%).

    python bench/half_life_recovery.py [--users 1000] [--neural-epochs 15]

Writes bench/RESULTS.md (section "Half-life recovery").
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from _results import add_settings_option, machine, parse_settings, settings_flags, write_section
from ebbtide.ingest import ingest_file
from ebbtide.models.decay import DecayModel
from ebbtide.models.neural import NeuralConfig, NeuralModel
from ebbtide.store import EventStore
from ebbtide.synthetic import generate, recovery_config, write_taobao_csv


def _half_lives(model) -> np.ndarray:
    """Per fitted category: decay's one half-life, neural's interest half-life."""
    if isinstance(model, DecayModel):
        return math.log(2.0) / model.delta_
    return model.half_lives()["interest_half_life_days"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--neural-epochs", type=int, default=15)
    add_settings_option(parser)
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args()
    cfg = recovery_config(users=args.users)
    log = generate(cfg)
    truth = log.truth_categories.to_pandas().set_index("category_id")
    well = truth[truth.n_events >= 500]
    settings = {"item_weight": 0.0, "validation_days": 0.0, "max_train_seconds": 1e9}
    settings.update(parse_settings(args.set))
    neural = NeuralConfig(epochs=args.neural_epochs, **settings)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.csv"
        write_taobao_csv(log, path)
        with EventStore(Path(tmp) / "s.duckdb") as store:
            ingest_file(store, path, "taobao")
            cutoff = cfg.start + timedelta(days=cfg.days)
            for name, model in (("decay", DecayModel()), ("neural", NeuralModel(neural))):
                clock = time.perf_counter()
                model.fit(store, cutoff=cutoff)
                seconds = time.perf_counter() - clock
                fitted = pd.Series(
                    _half_lives(model), index=model.ids_.category_ids[: len(_half_lives(model))]
                )
                error = (fitted[well.index] / well.half_life_days - 1.0).abs()
                short = well.half_life_days < 1.0
                rows.append(
                    (name, error.median(), error[short].median(), error[~short].median(), seconds)
                )
                print(name, rows[-1])
    lines = [
        "## Half-life recovery",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {machine()}, CPU only",
        f"- command: `python bench/half_life_recovery.py --users {args.users}"
        f" --neural-epochs {args.neural_epochs}" + settings_flags(args.set) + "`",
        f"- data: `ebbtide synth` seed 1, {args.users:,} users, 20 days, 30 categories, "
        f"{log.events.num_rows:,} events; {len(well)} categories with at least 500 events",
        "- error: median of |fitted / true half-life − 1| (bar: 20%); neural without the "
        "item head, no validation window",
        "",
        "| model | median error | categories < 1 day | categories ≥ 1 day | fit time |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, all_, short, long_, seconds in rows:
        lines.append(f"| {name} | {all_:.0%} | {short:.0%} | {long_:.0%} | {seconds:.0f} s |")
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section("Half-life recovery", section)


if __name__ == "__main__":
    main()
