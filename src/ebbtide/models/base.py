"""One interface for every model family, in the spirit of scikit-learn and lifelines.

`Model(config)` stores its config only. `fit(store, cutoff=T)` (or `fit(history)`) learns
from events with ``ts < T`` and returns the model; the fitted model keeps no store. A query
takes a `History`, the events before its instant ``at`` read once by
`ebbtide.features.history.snapshot`, and answers at that instant with a DataFrame keyed by
``user_id``. A model fitted up to ``T`` refuses to answer at ``at < T``: its parameters
know events after ``at``. A family implements array-level hooks (`_fit`, `_p_return`, ...)
in its own numbering of users, items and categories (its `Catalogue`), and declares in
`answers` which queries it answers, so callers ask instead of catching errors.
"""

from __future__ import annotations

import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from ebbtide.errors import (
    ConfigError,
    EbbtideError,
    NotFittedError,
    QueryTimeError,
    UnsupportedQueryError,
)
from ebbtide.features.history import FORGOTTEN, Catalogue, History, Localised, snapshot
from ebbtide.features.sequences import EventArrays, to_days
from ebbtide.store import EventStore

#: ``progress(message, fraction)``: what the fit is doing and how much of it is done, in
#: [0, 1], or NaN when the family cannot tell.
Progress = Callable[[str, float], None]
_REGISTRY: dict[str, type[Model]] = {}

#: Every query a family may answer, by the name of its public method.
QUERIES = frozenset({"p_return", "p_buy", "expected_return_time", "interest", "recommend"})


class Model(ABC):
    """Base class of every model: fit up to a cut-off, query with the history at an instant.

    Subclasses set `name`, `config_class` and `answers`, and implement `_fit` plus the
    hooks of the queries they answer; every hook receives the events before the query
    instant in the model's numbering (codes ``>= n`` fitted are entities new since the fit).
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    format_version: ClassVar[int] = 2
    #: The queries this family answers (names of the public methods).
    answers: frozenset[str] = frozenset()
    #: Learned attributes (numpy arrays, names ending in ``_``) that `save` writes.
    state_attributes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.config_class()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __repr__(self) -> str:
        fitted = f", cutoff={self.cutoff_.isoformat()}" if self.is_fitted else ""
        return f"{type(self).__name__}({self.config!r}{fitted})"

    # -- fitting -----------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "cutoff_")

    def fit(
        self,
        data: EventStore | History,
        *,
        cutoff: datetime | None = None,
        progress: Progress | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
    ) -> Self:
        """Learn from the events strictly before `cutoff`; returns self.

        Parameters
        ----------
        data : EventStore or History
            A store (its events before `cutoff` are read once) or a `snapshot` at the
            cut-off (then `cutoff` may be left out).
        cutoff : datetime
            The instant the model is fitted up to; it answers queries at this instant
            or later only.
        checkpoint, resume :
            Families that train in epochs save their progress to `checkpoint` after each
            one and, with `resume`, continue from it; the others ignore both.
        """
        history = _history_at(data, cutoff)
        if history.events.n_events == 0:
            raise EbbtideError(f"no events before {history.at.isoformat()}: nothing to learn from")
        local = Catalogue.empty().localise(history)
        self.cutoff_ = history.at
        self.catalogue_ = local.catalogue
        self._local = (history, local)
        self._checkpoint_path, self._resume = checkpoint, resume
        self._fit(local.events, progress)
        return self

    @abstractmethod
    def _fit(self, events: EventArrays, progress: Progress | None) -> None: ...

    # -- queries -----------------------------------------------------------------------
    def _prepare(
        self, query: str, history: History, users: Sequence[str] | None, in_sample: bool
    ) -> tuple[Localised, np.ndarray, bool]:
        """The history in this model's numbering, the asked users' codes, and whether the
        answer is in-sample (asked before the cut-off, explicitly)."""
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(store, cutoff=...)"
            )
        if query in QUERIES and query not in self.answers:  # diagnostics are no query
            raise UnsupportedQueryError(
                f"the {self.name} model does not answer {query}; it answers"
                f" {', '.join(sorted(self.answers)) or 'nothing'}"
            )
        if not isinstance(history, History):
            raise ConfigError(
                f"{query} takes the history before its instant, not {type(history).__name__}:"
                " pass ebbtide.snapshot(store, at=...)"
            )
        if history.at < self.cutoff_ and not in_sample:
            raise QueryTimeError(
                f"the {self.name} model was fitted on events before"
                f" {self.cutoff_.isoformat()} and cannot answer at the earlier instant"
                f" {history.at.isoformat()} without knowing its future: fit a model with"
                " cutoff at or before that instant (or ask for an in-sample curve with"
                " in_sample=True)"
            )
        if history.events.n_events == 0:
            raise ConfigError(
                f"no events before {history.at.isoformat()}: there is nothing to answer"
                " about; choose an instant after the log's first event (`ebbtide stats`"
                " shows its time range)"
            )
        cached = getattr(self, "_local", None)
        if cached is not None and cached[0] is history:
            local = cached[1]
        else:
            local = self.catalogue_.localise(history)
            self._check_belongs(local)
            self._local = (history, local)
        marked = history.at < self.cutoff_
        if users is None:
            return local, np.flatnonzero(local.events.lengths() > 0), marked
        local, codes = local.user_codes(users)
        return local, codes, marked

    def _check_belongs(self, local: Localised) -> None:
        """Refuse a history that shares no user and no item with the fit: its answers
        would be every family's prior for strangers, all alike, with nothing wrong said."""
        fitted = self.catalogue_
        events = local.events
        known_users = np.count_nonzero(events.lengths()[: fitted.user_ids.size])
        known_items = np.count_nonzero(events.item_idx < fitted.item_ids.size)
        if known_users == 0 and known_items == 0:
            raise ConfigError(
                f"this {self.name} model was fitted on another log: none of its"
                f" {fitted.user_ids.size:,} users and {fitted.item_ids.size:,} items is in"
                " this store. Score it on the store it was trained on, or train one here"
                " (`ebbtide train --db THIS_STORE ...`)"
            )

    def _frame(
        self, local: Localised, index: np.ndarray, marked: bool, **columns: np.ndarray
    ) -> pd.DataFrame:
        frame = pd.DataFrame({"user_id": local.catalogue.user_ids[index], **columns})
        return _mark(frame, marked)

    def p_return(
        self,
        history: History,
        users: Sequence[str] | None = None,
        *,
        horizon: timedelta,
        in_sample: bool = False,
    ) -> pd.DataFrame:
        """P(the user acts at all in ``[at, at + horizon)``), ``at = history.at``.

        Columns user_id, p_return. Users default to those with events in `history`.
        `in_sample` allows ``at`` before the cut-off (drawing the past with today's
        parameters) and adds a column ``in_sample`` that says so.
        """
        local, index, marked = self._prepare("p_return", history, users, in_sample)
        at = to_days(history.at)
        p = self._p_return(local.events, index, at, _days(horizon))
        return self._frame(local, index, marked, p_return=p)

    def p_buy(
        self,
        history: History,
        users: Sequence[str] | None = None,
        *,
        horizon: timedelta,
        in_sample: bool = False,
    ) -> pd.DataFrame:
        """P(the user buys in ``[at, at + horizon)``): columns user_id, p_buy."""
        local, index, marked = self._prepare("p_buy", history, users, in_sample)
        p = self._p_buy(local.events, index, to_days(history.at), _days(horizon))
        return self._frame(local, index, marked, p_buy=p)

    def expected_return_time(
        self, history: History, users: Sequence[str] | None = None, *, in_sample: bool = False
    ) -> pd.DataFrame:
        """Expected days from ``at`` to the next action: user_id, expected_return_days."""
        local, index, marked = self._prepare("expected_return_time", history, users, in_sample)
        days = self._expected_return_days(local.events, index, to_days(history.at))
        return self._frame(local, index, marked, expected_return_days=days)

    def interest(
        self,
        history: History,
        users: Sequence[str] | None = None,
        *,
        horizon: timedelta,
        in_sample: bool = False,
    ) -> pd.DataFrame:
        """Per (user, category touched before ``at``): the interest now and how it decays.

        Columns: user_id, category_id, p_engage (P(engage with the category within
        `horizon`)), level (intensity now, per day), baseline (the part that never
        fades), excitation (the part that fades, per day), half_life_days (the interest
        half-life). `neural` adds session (a session burst that fades within hours),
        session_half_life_days and usual (the user's average rate in the category).
        """
        local, index, marked = self._prepare("interest", history, users, in_sample)
        table = self._interest(local.events, index, to_days(history.at), _days(horizon))
        users_idx = table.pop("user_idx")
        categories = table.pop("category_idx")
        frame = pd.DataFrame(
            {
                "user_id": local.catalogue.user_ids[users_idx],
                "category_id": local.catalogue.category_ids[categories],
                **table,
            }
        )
        return _mark(frame, marked)

    def recommend(
        self,
        history: History,
        users: Sequence[str] | None = None,
        *,
        k: int = 10,
        exclude_bought: bool = True,
        in_sample: bool = False,
    ) -> pd.DataFrame:
        """Top-`k` items per user: columns user_id, rank (1 = best), item_id, score."""
        if k < 1:
            raise ConfigError(f"k={k} must be at least 1")
        local, index, marked = self._prepare("recommend", history, users, in_sample)
        items, scores = self._recommend(local.events, index, to_days(history.at), k, exclude_bought)
        n = items.shape[1]
        frame = pd.DataFrame(
            {
                "user_id": np.repeat(local.catalogue.user_ids[index], n),
                "rank": np.tile(np.arange(1, n + 1), index.size),
                "item_id": local.catalogue.item_ids[items.ravel()],
                "score": scores.ravel(),
            }
        )
        return _mark(frame, marked)

    # Hooks; a family overrides those named in its `answers`.
    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        raise NotImplementedError

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        raise NotImplementedError

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        raise NotImplementedError

    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    # -- privacy -----------------------------------------------------------------------
    def forget(self, user_ids: Iterable[str]) -> int:
        """Make the model hold nothing of these users; returns how many it knew.

        Each known user's catalogue entry becomes `FORGOTTEN` (the code stays, so other
        users keep theirs and their answers do not change) and the family resets the
        per-user parameters of those codes to what a user unseen at fit gets
        (`_forget_users`). A forgotten user who comes back is a new user to the model.
        What the shared parameters learnt from the user's events stays: retrain to
        remove that too.
        """
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: nothing to forget")
        wanted = pd.Index([str(u) for u in user_ids], dtype=object)
        codes = self.catalogue_._index("user_ids").get_indexer(wanted)
        codes = np.unique(codes[codes >= 0]).astype(np.int64)
        if codes.size == 0:
            return 0
        user_ids_kept = np.array(self.catalogue_.user_ids, dtype=object, copy=True)
        user_ids_kept[codes] = FORGOTTEN
        self.catalogue_ = replace(self.catalogue_, user_ids=user_ids_kept)
        self._local = None  # a cached localised history holds the old ids
        self._forget_users(codes)
        return int(codes.size)

    def _forget_users(self, codes: np.ndarray) -> None:
        """Reset the per-user parameters of user `codes` to an unseen user's; the default
        (families whose parameters are shared by all users) has nothing to reset."""
        return None

    # -- persistence -------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` (versioned) and ``weights.npz``; returns the directory."""
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: nothing to save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.name,
            "format_version": self.format_version,
            "config": asdict(self.config),
            "cutoff": self.cutoff_.isoformat(),
            "metrics": getattr(self, "metrics_", {}),
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        self._write_weights(directory)
        self._save_extra(directory)
        return directory

    def _write_weights(self, directory: Path) -> None:
        """``weights.npz``: the learned arrays and the catalogue's ids, replaced atomically
        (written beside, then renamed) so a reader or a crash never sees half a file."""
        state = {f"state_{k}": v for k, v in self._state().items()}
        ids = {f"ids_{k}": np.asarray(v, dtype=str) for k, v in asdict(self.catalogue_).items()}
        target = directory / "weights.npz"
        partial = directory / "weights.npz.partial"
        with partial.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **state, **ids)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)

    @classmethod
    def load(cls, directory: str | Path) -> Model:
        """Rebuild a saved model; it answers queries on any store's `History` by id."""
        directory = Path(directory)
        model = cls._load_arrays(directory)
        model._load_extra(directory)
        return model

    @classmethod
    def _load_arrays(cls, directory: Path) -> Model:
        """A saved model's config, catalogue and arrays, without `_load_extra` (networks,
        trees): enough to rewrite ``weights.npz`` without torch or joblib."""
        try:
            meta = json.loads((directory / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EbbtideError(f"{directory} holds no readable ebbtide model ({exc})") from None
        family = _family(str(meta.get("model", "")))
        if family is None:
            raise EbbtideError(f"{directory}: unknown model family {meta.get('model')!r}")
        if meta.get("format_version") != family.format_version:
            raise EbbtideError(
                f"{directory} was saved in {family.name} format {meta.get('format_version')};"
                f" this ebbtide reads format {family.format_version}. Retrain the model."
            )
        model = family(family.config_class(**meta["config"]))
        with np.load(directory / "weights.npz", allow_pickle=False) as data:
            state = {
                k.removeprefix("state_"): data[k] for k in data.files if k.startswith("state_")
            }
            ids = {k.removeprefix("ids_"): data[k] for k in data.files if k.startswith("ids_")}
        model.cutoff_ = datetime.fromisoformat(meta["cutoff"])
        model.metrics_ = meta.get("metrics", {})
        model.catalogue_ = Catalogue(**{k: v.astype(object) for k, v in ids.items()})
        model._set_state(state)
        return model

    def _state(self) -> dict[str, np.ndarray]:
        """The learned arrays named in `state_attributes`, for `save`."""
        return {name: np.asarray(getattr(self, name)) for name in self.state_attributes}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `_state` returned (a family overrides both if it needs more)."""
        for name in self.state_attributes:
            setattr(self, name, state[name])

    def _save_extra(self, directory: Path) -> None:
        """Write what arrays cannot hold (e.g. fitted trees); the default writes nothing."""
        return None

    def _load_extra(self, directory: Path) -> None:
        """Read what `_save_extra` wrote."""
        return None


def forget_in_saved_model(directory: str | Path, user_ids: Iterable[str]) -> int:
    """`Model.forget` applied to a saved model: rewrites its ``weights.npz`` in place.

    Only ``weights.npz`` holds user ids or per-user parameters (networks, trees and an
    exported ``model.onnx`` are shared by all users), so only it is rewritten, atomically;
    an untouched file keeps its date, so a compiled ``model.onnx`` stays valid. Returns
    how many of the users the model knew (0: nothing was written).
    """
    directory = Path(directory)
    model = Model._load_arrays(directory)
    forgotten = model.forget(user_ids)
    if forgotten:
        model._write_weights(directory)
    return forgotten


@dataclass(frozen=True, slots=True)
class ModelsForgotten:
    """What `forget_in_models` did with each folder: rewritten (the model knew the user),
    unchanged (it did not), gone (no model there any more) or failed (with the reason)."""

    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def forget_in_models(directories: Iterable[str | Path], user_ids: Sequence[str]) -> ModelsForgotten:
    """`forget_in_saved_model` over several folders, going on past one that fails, so a
    model moved away or unreadable does not keep the others holding the user."""
    result = ModelsForgotten()
    for directory in dict.fromkeys(str(Path(d).resolve()) for d in directories):
        if not (Path(directory) / "weights.npz").is_file():
            result.gone.append(directory)
            continue
        try:
            known = forget_in_saved_model(directory, user_ids)
        except (EbbtideError, OSError, ValueError) as exc:
            result.failed.append((directory, str(exc)))
            continue
        (result.updated if known else result.unchanged).append(directory)
    return result


def _family(name: str) -> type[Model] | None:
    """The registered family `name`, importing its module ``ebbtide.models.<name>`` if
    need be (only that one: rewriting a decay model must not import torch)."""
    if name not in _REGISTRY and name.isidentifier():
        try:
            importlib.import_module(f"ebbtide.models.{name}")
        except ModuleNotFoundError:
            return None
    return _REGISTRY.get(name)


def registered_families() -> dict[str, type[Model]]:
    """Model families imported so far, by name (each subclass registers itself)."""
    return dict(_REGISTRY)


def _history_at(data: EventStore | History, cutoff: datetime | None) -> History:
    """The history a fit learns from: `data` itself, or the events of a store before `cutoff`."""
    if isinstance(data, History):
        if cutoff is not None and cutoff != data.at:
            raise ConfigError(
                f"cutoff={cutoff.isoformat()} differs from the history's instant"
                f" {data.at.isoformat()}: leave cutoff out, or take the snapshot at the cut-off"
            )
        return data
    if cutoff is None:
        raise ConfigError("fit(store) needs cutoff=...: the instant to learn up to")
    return snapshot(data, at=cutoff)


def _mark(frame: pd.DataFrame, marked: bool) -> pd.DataFrame:
    """Say so in the answer when it is in-sample (parameters that saw its future)."""
    if marked:
        frame["in_sample"] = True
        frame.attrs["in_sample"] = True
    return frame


def _days(horizon: timedelta) -> float:
    if horizon <= timedelta(0):
        raise ConfigError(f"horizon={horizon} must be positive")
    return horizon.total_seconds() / 86_400
