"""One interface for every model family, in the spirit of scikit-learn and lifelines.

`Model(config)` stores its config only. `fit(store, cutoff=T)` learns from events with
``ts < T`` and returns the model. Queries name their instant: `p_return(users, at=...)`
reads only events before `at` and answers with a DataFrame keyed by ``user_id``. A family
implements the array-level hooks (`_fit`, `_p_return`, ...); this class turns external
ids into dense ids and back, loads the history once per instant, and saves and loads.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from ebbtide.errors import ConfigError, EbbtideError, NotFittedError, UnsupportedQueryError
from ebbtide.features.sequences import EventArrays, load_events, to_days
from ebbtide.store import EventStore

#: ``progress(message, fraction)``: what the fit is doing and how much of it is done, in
#: [0, 1], or NaN when the family cannot tell.
Progress = Callable[[str, float], None]
_REGISTRY: dict[str, type[Model]] = {}


@dataclass(frozen=True)
class IdMaps:
    """External ids indexed by dense id (``None`` where `forget` left a hole)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    category_ids: np.ndarray

    @classmethod
    def from_store(cls, store: EventStore) -> IdMaps:
        arrays = []
        for table, idx, key in (
            ("users", "user_idx", "user_id"),
            ("items", "item_idx", "item_id"),
            ("categories", "category_idx", "category_id"),
        ):
            rows = store.con.execute(f"SELECT {idx}, {key} FROM {table}").fetchnumpy()
            size = int(rows[idx].max()) + 1 if len(rows[idx]) else 0
            ids = np.full(size, None, dtype=object)
            ids[np.asarray(rows[idx], dtype=np.int64)] = np.asarray(rows[key], dtype=object)
            arrays.append(ids)
        return cls(*arrays)

    def user_index(self, users: Sequence[str]) -> np.ndarray:
        """Dense ids of `users`; unknown ids raise, naming a few of them."""
        lookup = pd.Index(self.user_ids)
        index = lookup.get_indexer(pd.Index(list(users), dtype=object))
        if (index < 0).any():
            unknown = [u for u, i in zip(users, index, strict=True) if i < 0][:5]
            raise EbbtideError(
                f"unknown user id(s) {unknown}: they have no events in the store this model"
                " was fitted on"
            )
        return index.astype(np.int64)


class Model(ABC):
    """Base class of every model: fit up to a cut-off, query at an explicit instant.

    Subclasses set `name` and `config_class` and implement `_fit` plus the hooks of the
    queries they answer; every hook receives the `EventArrays` before the query instant.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    format_version: ClassVar[int] = 1
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
        store: EventStore,
        *,
        cutoff: datetime,
        progress: Progress | None = None,
        checkpoint: Path | None = None,
        resume: bool = False,
    ) -> Self:
        """Learn from the events of `store` strictly before `cutoff`; returns self.

        Families that train in epochs save their progress to `checkpoint` after each one
        and, with `resume`, continue from it; the others fit in one pass and ignore both.
        """
        to_days(cutoff)
        events = load_events(store, before=cutoff)
        if events.n_events == 0:
            raise EbbtideError(f"no events before {cutoff.isoformat()}: nothing to learn from")
        self.store_ = store
        self.cutoff_ = cutoff
        self.ids_ = IdMaps.from_store(store)
        self._history: tuple[datetime, EventArrays] | None = (cutoff, events)
        self._checkpoint_path, self._resume = checkpoint, resume
        self._fit(events, progress)
        return self

    @abstractmethod
    def _fit(self, events: EventArrays, progress: Progress | None) -> None: ...

    # -- queries -----------------------------------------------------------------------
    def _prepare(self, users: Sequence[str] | None, at: datetime) -> tuple[EventArrays, np.ndarray]:
        if not self.is_fitted:
            raise NotFittedError(
                f"{type(self).__name__} is not fitted: call fit(store, cutoff=...)"
            )
        to_days(at)
        cached = getattr(self, "_history", None)
        if cached is not None and cached[0] == at:
            events = cached[1]
        else:
            events = load_events(self.store_, before=at)
            self._history = (at, events)
        if users is None:
            index = np.flatnonzero(events.lengths() > 0)
        else:
            index = self.ids_.user_index(users)
        return events, index

    def _frame(self, index: np.ndarray, **columns: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"user_id": self.ids_.user_ids[index], **columns})

    def p_return(
        self, users: Sequence[str] | None = None, *, at: datetime, horizon: timedelta
    ) -> pd.DataFrame:
        """P(the user acts at all in ``[at, at + horizon)``): columns user_id, p_return."""
        events, index = self._prepare(users, at)
        p = self._p_return(events, index, to_days(at), _days(horizon))
        return self._frame(index, p_return=p)

    def p_buy(
        self, users: Sequence[str] | None = None, *, at: datetime, horizon: timedelta
    ) -> pd.DataFrame:
        """P(the user buys in ``[at, at + horizon)``): columns user_id, p_buy."""
        events, index = self._prepare(users, at)
        return self._frame(index, p_buy=self._p_buy(events, index, to_days(at), _days(horizon)))

    def expected_return_time(
        self, users: Sequence[str] | None = None, *, at: datetime
    ) -> pd.DataFrame:
        """Expected days from `at` to the next action: columns user_id, expected_return_days."""
        events, index = self._prepare(users, at)
        days = self._expected_return_days(events, index, to_days(at))
        return self._frame(index, expected_return_days=days)

    def interest(
        self, users: Sequence[str] | None = None, *, at: datetime, horizon: timedelta
    ) -> pd.DataFrame:
        """Per (user, category touched before `at`): the interest now and how it decays.

        Columns: user_id, category_id, p_engage (P(engage with the category within
        `horizon`)), level (intensity now, per day), baseline, excitation (per day),
        half_life_days.
        """
        events, index = self._prepare(users, at)
        table = self._interest(events, index, to_days(at), _days(horizon))
        users_idx = table.pop("user_idx")
        categories = table.pop("category_idx")
        return pd.DataFrame(
            {
                "user_id": self.ids_.user_ids[users_idx],
                "category_id": self.ids_.category_ids[categories],
                **table,
            }
        )

    def recommend(
        self,
        users: Sequence[str] | None = None,
        *,
        at: datetime,
        k: int = 10,
        exclude_bought: bool = True,
    ) -> pd.DataFrame:
        """Top-`k` items per user: columns user_id, rank (1 = best), item_id, score."""
        if k < 1:
            raise ConfigError(f"k={k} must be at least 1")
        events, index = self._prepare(users, at)
        items, scores = self._recommend(events, index, to_days(at), k, exclude_bought)
        n = items.shape[1]
        return pd.DataFrame(
            {
                "user_id": np.repeat(self.ids_.user_ids[index], n),
                "rank": np.tile(np.arange(1, n + 1), index.size),
                "item_id": self.ids_.item_ids[items.ravel()],
                "score": scores.ravel(),
            }
        )

    # Hooks; a family overrides those it answers.
    def _p_return(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        raise self._unsupported("p_return")

    def _p_buy(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> np.ndarray:
        raise self._unsupported("p_buy")

    def _expected_return_days(
        self, events: EventArrays, users: np.ndarray, at: float
    ) -> np.ndarray:
        raise self._unsupported("expected_return_time")

    def _interest(
        self, events: EventArrays, users: np.ndarray, at: float, horizon: float
    ) -> dict[str, np.ndarray]:
        raise self._unsupported("interest")

    def _recommend(
        self, events: EventArrays, users: np.ndarray, at: float, k: int, exclude_bought: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        raise self._unsupported("recommend")

    def _unsupported(self, query: str) -> UnsupportedQueryError:
        return UnsupportedQueryError(f"the {self.name} model does not answer {query}")

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
        state = {f"state_{k}": v for k, v in self._state().items()}
        # "" marks a hole left by `forget`: a stored id is never empty.
        ids = {
            f"ids_{k}": np.asarray(["" if i is None else i for i in v], dtype=str)
            for k, v in asdict(self.ids_).items()
        }
        np.savez(directory / "weights.npz", allow_pickle=False, **state, **ids)
        self._save_extra(directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path, store: EventStore) -> Model:
        """Rebuild a saved model; queries will read history from `store`."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise EbbtideError(f"{directory} holds no readable ebbtide model ({exc})") from None
        family = _REGISTRY.get(meta.get("model", ""))
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
        model.store_ = store
        model.cutoff_ = datetime.fromisoformat(meta["cutoff"])
        model.metrics_ = meta.get("metrics", {})
        model.ids_ = IdMaps(
            **{k: np.where(v == "", None, v.astype(object)) for k, v in ids.items()}
        )
        model._history = None
        model._set_state(state)
        model._load_extra(directory)
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


def registered_families() -> dict[str, type[Model]]:
    """Model families imported so far, by name (each subclass registers itself)."""
    return dict(_REGISTRY)


def _days(horizon: timedelta) -> float:
    if horizon <= timedelta(0):
        raise ConfigError(f"horizon={horizon} must be positive")
    return horizon.total_seconds() / 86_400
