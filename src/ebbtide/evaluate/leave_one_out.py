"""Leave-one-out, the peers' protocol: each user's last event is the test, the one before it
validation, and every model ranks the whole catalogue.

Why it is here although the temporal holdout is the realistic protocol: RecBole and most
papers report it, so a side-by-side comparison needs it, on exactly the same split.

The split (as RecBole's ``LS: valid_and_test`` with ``order: TO``): per user with at least
`min_events` events, ordered by time (ties by the store's event order), the last event is
the test target and the second to last the validation target. Two stores are written next
to each other with identical dense ids: *train* (without both targets) and *train+valid*
(without the test target). A model is fitted once, on *train*; for validation it ranks items
with the train history, for the test it is loaded onto *train+valid*, so the validation
event is part of the history but the model is not refitted (RecBole does the same).

Each user is scored at the moment of the held-out event, from the events strictly before it:
the moment a shop would serve the list when the user shows up. Models that ignore time
(RecBole's) are unaffected; time-aware ones see how long ago each past event was.

Metrics: HR@K, NDCG@K and MRR@K of the single target from the model's top-K over all items
(a target outside the top-K counts 0, so top-K is full ranking); items the user already
touched are not excluded, because repeat consumption is a real next event.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError
from ebbtide.evaluate.comparison import Comparison, timed_fit
from ebbtide.evaluate.metrics import ranking_metrics
from ebbtide.features.history import History, snapshot
from ebbtide.models.base import Model
from ebbtide.models.scoring import build_model
from ebbtide.store import ITEM_ENGAGEMENT, EventStore

__all__ = ["LeaveOneOutEvaluation", "LeaveOneOutSplit", "leave_one_out", "split_leave_one_out"]

_COPIED = ("users", "items", "categories")


@dataclass(frozen=True)
class LeaveOneOutSplit:
    """The two stores of the split and the held-out targets.

    Attributes
    ----------
    train, train_valid : Path
        Store files without both targets, and without the test target only.
    targets : DataFrame
        user_id, valid_item, test_item, valid_ts, test_ts for every evaluated user.
    n_events : int
        Events in the source store.
    """

    train: Path
    train_valid: Path
    targets: pd.DataFrame
    n_events: int


def split_leave_one_out(
    store: EventStore, folder: Path, *, min_events: int = 3
) -> LeaveOneOutSplit:
    """Write the *train* and *train+valid* stores of `store` into `folder`."""
    if not isinstance(min_events, int) or min_events < 3:
        raise ConfigError(f"min_events={min_events!r}: leave-one-out needs at least 3 per user")
    ranked = f"""
        SELECT rowid AS rid, user_idx, item_idx, ts,
               row_number() OVER (PARTITION BY user_idx ORDER BY ts DESC, rowid DESC) AS back,
               count(*) OVER (PARTITION BY user_idx) AS n
        FROM events WHERE {ITEM_ENGAGEMENT}"""
    held = store.con.execute(
        f"""SELECT r.rid, r.back, u.user_id, i.item_id, r.ts FROM ({ranked}) r
        JOIN users u USING (user_idx) JOIN items i USING (item_idx)
        WHERE r.back <= 2 AND r.n >= ? ORDER BY u.user_id, r.back""",
        [min_events],
    ).df()
    if held.empty:
        raise ConfigError(f"no user has {min_events} or more events: nothing to hold out")
    test, valid = held[held["back"] == 1], held[held["back"] == 2]
    targets = pd.DataFrame(
        {
            "user_id": test["user_id"].to_numpy(),
            "valid_item": valid["item_id"].to_numpy(),
            "test_item": test["item_id"].to_numpy(),
            "valid_ts": valid["ts"].to_numpy(),
            "test_ts": test["ts"].to_numpy(),
        }
    )
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.duckdb", folder / "train_valid.duckdb"
    for path, dropped in zip(paths, (held["rid"], test["rid"]), strict=True):
        _copy_without(store, path, dropped.to_numpy())
    n_events = store.con.execute("SELECT count(*) FROM events").fetchone()[0]
    return LeaveOneOutSplit(paths[0], paths[1], targets, int(n_events))


def _copy_without(store: EventStore, path: Path, rowids: np.ndarray) -> None:
    """A new store with the same ids and every event except those at `rowids`."""
    path.unlink(missing_ok=True)
    drop = pd.DataFrame({"rid": rowids.astype(np.int64)})
    store.con.register("loo_drop", drop)
    try:
        events = store.con.sql(
            "SELECT * EXCLUDE (rid) FROM (SELECT rowid AS rid, * FROM events) "
            "WHERE rid NOT IN (SELECT rid FROM loo_drop) ORDER BY rid"
        ).to_arrow_table()
        tables = {name: store.con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in _COPIED}
    finally:
        store.con.unregister("loo_drop")
    with EventStore(path) as copy:
        for name, table in {**tables, "events": events}.items():
            copy.con.register("loo_source", table)
            copy.con.execute(f"INSERT INTO {name} SELECT * FROM loo_source")
            copy.con.unregister("loo_source")


def _ranks(
    model: Model, history: History, targets: pd.Series, instants: pd.Series, k: int
) -> np.ndarray:
    """1-based rank of each user's target in the model's top-K at the user's own instant.

    Users are scored in groups sharing an instant (one `recommend` call per group, on the
    part of `history` before it); a target outside the top-K gets rank k + 1. The peers'
    protocol is not temporal: the model is fitted on every user's training events, so at a
    user's own instant it has seen other users' later events. That is RecBole's protocol,
    asked for here explicitly (``in_sample=True``); the temporal holdout is the honest one.
    """
    ranks = pd.Series(k + 1, index=targets.index, dtype=np.int64)
    history = history.for_users(list(targets.index))
    for when, users in instants.groupby(instants, sort=True).groups.items():
        recs = model.recommend(
            history.until(when), list(users), k=k, exclude_bought=False, in_sample=True
        )
        wanted = targets.loc[users].rename("item_id").reset_index()
        hit = recs.merge(wanted, on=["user_id", "item_id"], how="inner")
        ranks.loc[hit["user_id"].to_numpy()] = hit["rank"].to_numpy()
    return ranks.to_numpy()


def _scores(ranks: np.ndarray, k: int) -> dict[str, float]:
    return ranking_metrics(ranks, ks=(k,))


class LeaveOneOutEvaluation(Comparison):
    """Several models on one leave-one-out split: validation and test metrics per model."""

    protocol: ClassVar[str] = "leave-one-out"

    def describe(self) -> str:
        split = self.split
        return (
            f"Leave-one-out: {split['users']:,} users with at least {split['min_events']} "
            f"events, {split['events']:,} events; last event test, second to last validation; "
            f"top-{self.k} over all {split['items']:,} items, seen items not excluded."
        )


def leave_one_out(
    store: EventStore,
    models: Sequence[str | Model],
    *,
    k: int = 10,
    min_events: int = 3,
    folder: Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> LeaveOneOutEvaluation:
    """Fit each model on the train split and score validation and test targets.

    Parameters
    ----------
    store : EventStore
        The full log; it is only read.
    models : sequence of str or Model
        Family names (defaults) or unfitted models.
    k : int
        Cut-off of HR, NDCG and MRR.
    min_events : int
        Users with fewer events are not evaluated (their events still train the models).
    folder : Path, optional
        Where the split's two stores are written (default: a temporary folder).
    on_stage : callable, optional
        Called with a short description before each stage.

    Returns
    -------
    LeaveOneOutEvaluation
    """
    if not models:
        raise ConfigError("no models to evaluate: name at least one family, e.g. decay")
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r}: use an integer >= 1")
    stage = on_stage or (lambda _text: None)
    with tempfile.TemporaryDirectory() as scratch:
        where = folder or Path(scratch)
        stage("writing the split")
        split = split_leave_one_out(store, where, min_events=min_events)
        targets = split.targets.set_index("user_id")
        rows, skipped = [], []
        with EventStore(split.train, read_only=True) as train:
            cutoff = _after(train)
            n_items = train.con.execute("SELECT count(*) FROM items").fetchone()[0]
            history = snapshot(train, at=cutoff)
        with EventStore(split.train_valid, read_only=True) as store_valid:
            test_history = snapshot(store_valid, at=_after(store_valid))
        test_at = _instants(targets["test_ts"], test_history.at)
        for entry in models:
            model = build_model(entry) if isinstance(entry, str) else entry
            if "recommend" not in model.answers:
                skipped.append(model.name)
                continue
            fit_seconds = timed_fit(model, history, stage)
            clock = time.perf_counter()
            valid_at = _instants(targets["valid_ts"], cutoff)
            valid_ranks = _ranks(model, history, targets["valid_item"], valid_at, k)
            valid = _scores(valid_ranks, k)
            saved = where / f"model-{model.name}"
            model.save(saved)
            loaded = Model.load(saved)
            test_ranks = _ranks(loaded, test_history, targets["test_item"], test_at, k)
            test = _scores(test_ranks, k)
            rows.append(
                {
                    "model": model.name,
                    **{f"valid_{name}": value for name, value in valid.items()},
                    **{f"test_{name}": value for name, value in test.items()},
                    "fit_seconds": fit_seconds,
                    "score_seconds": time.perf_counter() - clock,
                }
            )
    summary = {
        "users": len(targets),
        "events": split.n_events,
        "items": int(n_items),
        "min_events": min_events,
    }
    notes = [f"{name} does not rank items, so it is left out" for name in skipped]
    notes += [
        "Each user is scored at the moment of the held-out event, from the events before it "
        "(the moment a shop would serve the list); the test target is ranked with the "
        "validation event in the history, without refitting."
    ]
    return LeaveOneOutEvaluation(table=pd.DataFrame(rows), split=summary, k=k, notes=notes)


def _instants(target_times: pd.Series, latest: datetime) -> pd.Series:
    """Each user's scoring instant: the moment of the held-out event (capped at `latest`)."""
    when = pd.to_datetime(target_times, utc=True)
    return when.clip(upper=pd.Timestamp(latest)).map(lambda t: t.to_pydatetime())


def _after(store: EventStore) -> datetime:
    last = store.con.execute("SELECT max(ts) FROM events").fetchone()[0]
    return last + timedelta(seconds=1)
