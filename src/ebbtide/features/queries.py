"""What a search is about: a map from query text to categories, learned from what followed.

Why from behaviour: a shop's log rarely says what a query means, but it shows what the
user did next. Each search is credited with the categories its user engaged with after it,
so "running shoes" comes to mean the categories people open after typing it. (Item titles
would help too, but the store keeps none; only the log is used.)

The map is a chain of smoothed estimates, each shrunk toward the one below it:

* **prior** ``π_c``: the share of category c in everything searches led to;
* **per word** ``P(c | w) = (n_wc + β_w π_c) / (n_w + β_w)`` (additive smoothing toward
  the prior, ``β_w`` = `word_prior` pseudo-searches);
* **words of a query** combined as naive Bayes, ``P_words(c | q) ∝ π_c Π_w P(c | w) / π_c``,
  so a shared word ("shoes") splits its vote and the others decide ("running shoes");
* **exact query** ``P(c | q) = (n_qc + β_q P_words(c | q)) / (n_q + β_q)``: a query seen
  often follows its own counts, a rare one leans on its words, an unseen one with unknown
  words is the prior. ``β_q`` = `query_prior` is the "seen often enough" scale, a soft
  switch rather than a threshold.

Counts ``n`` are in searches: a search spreads one unit over the categories engaged with
after it, first engagements weighted more (``1/(1 + rank)``), so a search followed by fifty
views does not outweigh fifty searches followed by one each.

No leakage by construction: `QueryCategoryMap.fit` reads only the arrays it is given, and
the caller passes searches and engagements cut at the same instant.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ebbtide.errors import ConfigError, EbbtideError, NotFittedError

if TYPE_CHECKING:
    from ebbtide.features.history import Catalogue, History, Localised

__all__ = ["QueryCategoryMap", "normalise_queries"]

_WORD = r"\w+"  # a word: a run of unicode letters, digits or underscores
_ARRAYS = (
    "prior_",
    "words_",
    "word_mass_",
    "word_indptr_",
    "word_categories_",
    "word_counts_",
    "queries_",
    "query_mass_",
    "query_indptr_",
    "query_categories_",
    "query_counts_",
)


def normalise_queries(queries: np.ndarray | list) -> np.ndarray:
    """The normalised text of each query: what the map's counts are keyed by.

    Unicode NFKC (full-width letters become plain ones), case-folded, cut into words on
    anything that is not a letter, digit or underscore (in any script), joined by one
    space. A missing query is the empty string. Each distinct text is normalised once.

    Examples
    --------
    >>> normalise_queries(["  Red-SHOES ", "Ｔｅａ", None]).tolist()
    ['red shoes', 'tea', '']
    """
    codes, distinct = pd.factorize(pd.Series(np.asarray(queries, dtype=object)), sort=False)
    text = (
        pd.Series(np.asarray(distinct, dtype=object), dtype=object)
        .astype(str)
        .str.normalize("NFKC")
        .str.casefold()
        .str.findall(_WORD)
        .str.join(" ")
        .to_numpy(dtype=object)
    )
    return np.where(codes >= 0, text[np.maximum(codes, 0)] if text.size else "", "").astype(object)


def _query_words(normalised: np.ndarray) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    """Distinct normalised queries, the code of each input in them, and the (query code,
    word) pairs of their distinct words as two arrays plus the words' index."""
    codes, distinct = pd.factorize(pd.Series(normalised, dtype=object), sort=True)
    lists = pd.Series(np.asarray(distinct, dtype=object), dtype=object).str.split(" ")
    flat = lists.explode()
    flat = flat[flat.notna() & (flat != "")]
    pairs = pd.DataFrame({"query": flat.index.to_numpy(np.int64), "word": flat.to_numpy(object)})
    pairs = pairs.drop_duplicates()
    word_codes, vocabulary = pd.factorize(pairs["word"], sort=True)
    return (
        np.asarray(distinct, dtype=object),
        codes.astype(np.int64),
        (pairs["query"].to_numpy(np.int64), word_codes.astype(np.int64), pd.Index(vocabulary)),
    )


def _attribute(
    search_user: np.ndarray,
    search_t: np.ndarray,
    event_user: np.ndarray,
    event_t: np.ndarray,
    window_days: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which search each engagement followed, and its weight.

    Searches and engagements are sorted together by (user, time), a search before an
    engagement at the same instant; an engagement belongs to the user's latest search
    before it (so a new search ends the previous one's window) if within `window_days`.
    Its weight is ``1 / (1 + rank)`` (rank 0 the first engagement after the search),
    normalised so each search with engagements hands out one unit.

    Returns the engagements' indices (into the event arrays), their searches' indices and
    the weights; engagements after no search are left out.
    """
    n_s = search_t.size
    user = np.concatenate([search_user, event_user]).astype(np.int64)
    t = np.concatenate([search_t, event_t]).astype(np.float64)
    is_search = np.r_[np.ones(n_s, dtype=bool), np.zeros(event_t.size, dtype=bool)]
    order = np.lexsort((~is_search, t, user))
    pos = np.arange(order.size)
    latest = np.maximum.accumulate(np.where(is_search[order], pos, -1)) if order.size else pos
    row = order[np.maximum(latest, 0)]
    engaged = (
        ~is_search[order]
        & (latest >= 0)
        & (user[row] == user[order])
        & (t[order] - t[row] <= window_days)
    )
    event = order[engaged] - n_s
    search = row[engaged]
    rank = (pos - latest)[engaged] - 1
    weight = 1.0 / (1.0 + rank)
    weight /= np.bincount(search, weight, minlength=n_s)[search]
    return event, search, weight


class QueryCategoryMap:
    """Query text → categories, from what users engaged with after searching.

    Parameters
    ----------
    window_days : float
        How long after a search its user's engagements count toward it (default 2 hours);
        the user's next search ends it sooner. Two hours covers a shopping session; a
        longer window credits the search with the next day's unrelated browsing.
    word_prior : float
        β_w > 0: pseudo-searches pulling each word's categories toward the prior.
    query_prior : float
        β_q > 0: pseudo-searches pulling a query's own counts toward its words' estimate;
        a query searched (with engagements after it) well over β_q times follows its counts.
    min_users : int
        A query or word is kept only when at least this many users searched it (and
        engaged after): one person's own words (a name, an address) stay out of a saved
        model, and one person's habit says little about what words mean. Queries below
        it are read through their words, words below it are unknown.

    Attributes
    ----------
    prior_ : np.ndarray of float64, (n_categories,)
        π, the categories' shares in what searches led to.
    words_, queries_ : np.ndarray of str
        The vocabulary and the normalised queries seen with engagements, sorted.
    n_searches_, n_attributed_ : int
        Searches fitted on, and those with at least one engagement after them.

    Examples
    --------
    >>> import numpy as np
    >>> m = QueryCategoryMap(min_users=1).fit(
    ...     search_user=np.array([0, 1]), search_t=np.array([0.0, 0.0]),
    ...     queries=np.array(["Red shoes", "tea"]), event_user=np.array([0, 1]),
    ...     event_t=np.array([0.01, 0.01]), event_category=np.array([2, 5]))
    >>> m.top1(["red  SHOES", "green tea"]).tolist()
    [2, 5]
    """

    def __init__(
        self,
        *,
        window_days: float = 2 / 24,
        word_prior: float = 1.0,
        query_prior: float = 3.0,
        min_users: int = 2,
    ) -> None:
        self.window_days = window_days
        self.word_prior = word_prior
        self.query_prior = query_prior
        self.min_users = min_users

    def __repr__(self) -> str:
        params = (
            f"window_days={self.window_days:g}, word_prior={self.word_prior:g},"
            f" query_prior={self.query_prior:g}, min_users={self.min_users}"
        )
        if hasattr(self, "prior_"):
            params += f"; {self.queries_.size} queries, {self.words_.size} words"
        return f"QueryCategoryMap({params})"

    def _check_params(self) -> None:
        for name in ("window_days", "word_prior", "query_prior"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"QueryCategoryMap {name}={value!r} must be a number > 0")
        if not isinstance(self.min_users, int) or self.min_users < 1:
            raise ConfigError(f"QueryCategoryMap min_users={self.min_users!r}: an integer >= 1")

    # -- fitting -----------------------------------------------------------------------
    def fit(
        self,
        search_user: np.ndarray,
        search_t: np.ndarray,
        queries: np.ndarray,
        event_user: np.ndarray,
        event_t: np.ndarray,
        event_category: np.ndarray,
        *,
        n_categories: int | None = None,
    ) -> QueryCategoryMap:
        """Learn from searches and engagements, both already cut before the same instant.

        Parameters
        ----------
        search_user, search_t, queries : array-like, one entry per search
            User code, time in days and query text.
        event_user, event_t, event_category : array-like, one entry per engagement
            User code, time in days and category code (``< 0``: none, left out). Any
            order; nothing is assumed sorted.
        n_categories : int, optional
            Number of category codes (default: the largest seen + 1).

        Returns
        -------
        self
        """
        self._check_params()
        search_user = np.asarray(search_user, dtype=np.int64)
        search_t = np.asarray(search_t, dtype=np.float64)
        queries = np.asarray(queries, dtype=object)
        event_category = np.asarray(event_category, dtype=np.int64)
        categorised = event_category >= 0
        event_user = np.asarray(event_user, dtype=np.int64)[categorised]
        event_t = np.asarray(event_t, dtype=np.float64)[categorised]
        event_category = event_category[categorised]
        if not search_user.size == search_t.size == queries.size:
            raise EbbtideError(
                f"QueryCategoryMap.fit: {search_user.size} search users, {search_t.size}"
                f" times and {queries.size} queries; pass one of each per search"
            )
        n_cat = int(event_category.max(initial=-1)) + 1 if n_categories is None else n_categories
        if n_cat < int(event_category.max(initial=-1)) + 1:
            raise ConfigError(
                f"n_categories={n_categories} but category code {event_category.max()} occurs"
            )
        event, search, weight = _attribute(
            search_user, search_t, event_user, event_t, float(self.window_days)
        )
        normalised = normalise_queries(queries)
        distinct, code, (pair_query, pair_word, vocabulary) = _query_words(normalised)
        shape = (distinct.size, n_cat)
        query_counts = sp.coo_matrix(
            (weight, (code[search], event_category[event])), shape=shape
        ).tocsr()
        query_mass = np.asarray(query_counts.sum(axis=1)).ravel()
        incidence = sp.csr_matrix(
            (np.ones(pair_word.size), (pair_word, pair_query)),
            shape=(vocabulary.size, distinct.size),
        )
        word_counts = (incidence @ query_counts).tocsr()
        word_mass = incidence @ query_mass
        self.prior_ = self._prior(np.asarray(query_counts.sum(axis=0)).ravel(), event_category)
        searched = np.unique(search)
        by_user = sp.csr_matrix(
            (np.ones(searched.size), (code[searched], search_user[searched])),
            shape=(distinct.size, int(search_user.max(initial=-1)) + 1),
        )
        seen = (query_mass > 0) & (by_user.getnnz(axis=1) >= self.min_users)
        known = (word_mass > 0) & ((incidence @ by_user).getnnz(axis=1) >= self.min_users)
        self._set_tables(
            np.asarray(vocabulary, dtype=object)[known],
            word_mass[known],
            word_counts[known],
            distinct[seen],
            query_mass[seen],
            query_counts[seen],
        )
        self.n_searches_ = int(search_t.size)
        self.n_attributed_ = int(np.unique(search).size)
        return self

    def _prior(self, led_to: np.ndarray, event_category: np.ndarray) -> np.ndarray:
        """π: where searches led; where none led anywhere, where engagements went (so an
        unseen query still gets the shop's usual categories)."""
        n_cat = led_to.size
        if led_to.sum() <= 0:
            led_to = np.bincount(event_category, minlength=n_cat).astype(np.float64)
        total = led_to.sum()
        return led_to / total if total > 0 else np.zeros(n_cat)

    def _set_tables(self, words, word_mass, word_counts, queries, query_mass, query_counts):
        self.words_ = np.asarray(words, dtype=str)
        self.word_mass_ = np.asarray(word_mass, dtype=np.float64)
        self.word_counts_ = sp.csr_matrix(word_counts)
        self.queries_ = np.asarray(queries, dtype=str)
        self.query_mass_ = np.asarray(query_mass, dtype=np.float64)
        self.query_counts_ = sp.csr_matrix(query_counts)
        self._word_index = pd.Index(self.words_.astype(object))
        self._query_index = pd.Index(self.queries_.astype(object))
        # log1p(n_wc / (β_w π_c)): each word's naive-Bayes vote, nonzero where it was seen
        votes = self.word_counts_.copy()
        votes.data = np.log1p(votes.data / (self.word_prior * self.prior_[votes.indices]))
        self._votes = votes

    # -- scoring -----------------------------------------------------------------------
    def predict(self, queries: np.ndarray | list, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
        """The `k` likeliest categories of each query and their probabilities.

        Returns
        -------
        categories : np.ndarray of int64, (n, k)
            Category codes, likeliest first (ties: smaller code); -1 past the categories
            that exist.
        probabilities : np.ndarray of float64, (n, k)
            ``P(c | query)`` (0 where the code is -1); a row sums to at most 1.
        """
        if not hasattr(self, "prior_"):
            raise NotFittedError("QueryCategoryMap is not fitted: call fit(...) first")
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k={k!r} must be an integer >= 1")
        normalised = normalise_queries(queries)
        distinct, code, (pair_query, pair_word, vocabulary) = _query_words(normalised)
        cats, probs = self._predict_distinct(distinct, pair_query, pair_word, vocabulary, k)
        return cats[code], probs[code]

    def top1(self, queries: np.ndarray | list) -> np.ndarray:
        """The likeliest category of each query (-1 when the map knows no category)."""
        return self.predict(queries, k=1)[0][:, 0]

    def _predict_distinct(self, distinct, pair_query, pair_word, vocabulary, k):
        n, n_cat = distinct.size, self.prior_.size
        known = self._word_index.get_indexer(vocabulary)[pair_word]
        has = known >= 0
        incidence = sp.csr_matrix(
            (np.ones(int(has.sum())), (pair_query[has], known[has])),
            shape=(n, self.words_.size),
        )
        votes = (incidence @ self._votes).tocsr()  # S_qc, sparse
        prior = self.prior_
        row = np.repeat(np.arange(n), np.diff(votes.indptr))
        shift = np.zeros(n)
        if votes.nnz:
            np.maximum.at(shift, row, votes.data)
        scaled = prior[votes.indices] * np.exp(votes.data - shift[row])
        inside = np.bincount(row, prior[votes.indices], minlength=n)
        z = np.exp(-shift) * np.maximum(1.0 - inside, 0.0) + np.bincount(row, scaled, minlength=n)
        z = np.where(z > 0, z, 1.0)

        exact = self._query_index.get_indexer(pd.Index(distinct, dtype=object))
        hit = exact >= 0
        if self.queries_.size:
            counts = sp.diags(hit.astype(np.float64)) @ self.query_counts_[np.maximum(exact, 0)]
            mass = np.where(hit, self.query_mass_[np.maximum(exact, 0)], 0.0)
        else:
            counts, mass = sp.csr_matrix((n, n_cat)), np.zeros(n)

        # Candidates: categories the words voted for, the query's own, the prior's top k.
        top_prior = np.argsort(-prior, kind="stable")[: min(k, n_cat)]
        counts = counts.tocoo()
        key = np.concatenate(
            [
                row * n_cat + votes.indices,
                counts.row.astype(np.int64) * n_cat + counts.col,
                (np.arange(n)[:, None] * n_cat + top_prior).ravel(),
            ]
        )
        vote = np.concatenate([votes.data, np.zeros(counts.nnz + n * top_prior.size)])
        own = np.concatenate([np.zeros(votes.nnz), counts.data, np.zeros(n * top_prior.size)])
        key, inverse = np.unique(key, return_inverse=True)
        vote = np.bincount(inverse, vote, minlength=key.size)
        own = np.bincount(inverse, own, minlength=key.size)
        q, c = key // max(n_cat, 1), key % max(n_cat, 1)
        p_words = prior[c] * np.exp(vote - shift[q]) / z[q]
        beta = self.query_prior
        p = (own + beta * p_words) / (mass[q] + beta)

        order = np.lexsort((c, -p, q))
        q, c, p = q[order], c[order], p[order]
        first = np.searchsorted(q, np.arange(n))
        rank = np.arange(q.size) - first[q]
        take = rank < k
        cats = np.full((n, k), -1, dtype=np.int64)
        probs = np.zeros((n, k))
        cats[q[take], rank[take]] = c[take]
        probs[q[take], rank[take]] = np.where(p[take] > 0, p[take], 0.0)
        cats[probs <= 0] = -1
        return cats, probs

    # -- persistence -------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted map as plain arrays (no objects): ``np.savez(allow_pickle=False)``
        writes them, `from_arrays` reads them back."""
        if not hasattr(self, "prior_"):
            raise NotFittedError("QueryCategoryMap is not fitted: nothing to save")
        params = np.array([self.window_days, self.word_prior, self.query_prior, self.min_users])
        counts = np.array([self.n_searches_, self.n_attributed_], dtype=np.int64)
        return {
            "params": params,
            "fitted_counts": counts,
            "prior_": self.prior_,
            "words_": self.words_,
            "word_mass_": self.word_mass_,
            "word_indptr_": self.word_counts_.indptr.astype(np.int64),
            "word_categories_": self.word_counts_.indices.astype(np.int64),
            "word_counts_": self.word_counts_.data,
            "queries_": self.queries_,
            "query_mass_": self.query_mass_,
            "query_indptr_": self.query_counts_.indptr.astype(np.int64),
            "query_categories_": self.query_counts_.indices.astype(np.int64),
            "query_counts_": self.query_counts_.data,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> QueryCategoryMap:
        """The map `to_arrays` wrote."""
        missing = [name for name in ("params", "fitted_counts", *_ARRAYS) if name not in arrays]
        if missing:
            raise EbbtideError(f"not a saved QueryCategoryMap: {', '.join(missing)} missing")
        window, word_prior, query_prior, min_users = (float(v) for v in arrays["params"])
        qmap = cls(
            window_days=window,
            word_prior=word_prior,
            query_prior=query_prior,
            min_users=int(min_users),
        )
        qmap.prior_ = np.asarray(arrays["prior_"], dtype=np.float64)
        n_cat = qmap.prior_.size

        def table(prefix: str, n_rows: int) -> sp.csr_matrix:
            return sp.csr_matrix(
                (
                    np.asarray(arrays[f"{prefix}_counts_"], dtype=np.float64),
                    np.asarray(arrays[f"{prefix}_categories_"], dtype=np.int64),
                    np.asarray(arrays[f"{prefix}_indptr_"], dtype=np.int64),
                ),
                shape=(n_rows, n_cat),
            )

        words, queries = np.asarray(arrays["words_"]), np.asarray(arrays["queries_"])
        qmap._set_tables(
            words,
            arrays["word_mass_"],
            table("word", words.size),
            queries,
            arrays["query_mass_"],
            table("query", queries.size),
        )
        qmap.n_searches_, qmap.n_attributed_ = (int(v) for v in arrays["fitted_counts"])
        return qmap

    def save(self, path: str | Path) -> Path:
        """Write the map to one ``.npz`` file (no pickles); returns the path."""
        path = Path(path)
        with path.open("wb") as handle:
            np.savez(handle, allow_pickle=False, **self.to_arrays())
        return path

    @classmethod
    def load(cls, path: str | Path) -> QueryCategoryMap:
        """Read a map `save` wrote."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls.from_arrays({name: data[name] for name in data.files})


# -- the map of a model's history -------------------------------------------------
def search_users(searches, history: History, catalogue: Catalogue) -> np.ndarray:
    """The model's code of each search's user (-1: a user the catalogue lacks)."""
    ids = history.ids.user_ids[searches.user_idx] if searches.t.size else np.zeros(0, object)
    return catalogue._index("user_ids").get_indexer(pd.Index(ids, dtype=object))


def fit_query_map(history: History, local: Localised) -> QueryCategoryMap | None:
    """What queries are about, as `decay` and `neural` learn it: a `QueryCategoryMap` with
    its defaults, from the searches of the users `local` knows and the item events after them
    (all before ``history.at``). None when the history has no such search.

    Parameters
    ----------
    history : History
        The history at the cut-off, with its searches.
    local : Localised
        The same history in the model's numbering (`Catalogue.localise`).
    """
    searches = getattr(history, "searches", None)
    if searches is None or searches.t.size == 0:
        return None
    user = search_users(searches, history, local.catalogue)
    known = user >= 0
    if not known.any():
        return None
    ev = local.events
    return QueryCategoryMap().fit(
        user[known],
        searches.t[known],
        searches.query[known],
        ev.user_idx,
        ev.t,
        ev.category_idx,
        n_categories=ev.n_categories,
    )


def explain_searches(
    catalogue: Catalogue,
    user: np.ndarray,
    category: np.ndarray,
    typed: np.ndarray,
    t: np.ndarray,
    contribution: np.ndarray,
    k: int,
) -> pd.DataFrame:
    """`explain_queries`' answer (decay's and neural's): per (user, category), the `k`
    queries contributing most, grouped by their normalised text and shown as last typed.

    Inputs are one row per placed search, by (user, time), in the model's codes: its
    user, category, typed query, time (days) and contribution now (per day).
    """
    rows = pd.DataFrame(
        {
            "user": user,
            "category": category,
            "normalised": normalise_queries(typed),
            "query": typed,
            "t": t,
            "contribution": contribution,
        }
    )
    table = (
        rows.groupby(["user", "category", "normalised"], sort=False)
        .agg(
            query=("query", "last"),  # rows are by (user, time): the last typed
            searches=("t", "size"),
            t=("t", "max"),
            contribution=("contribution", "sum"),
        )
        .reset_index()
        .sort_values(["user", "category", "contribution"], ascending=[True, True, False])
    )
    table = table[table.groupby(["user", "category"]).cumcount() < k]
    return pd.DataFrame(
        {
            "user_id": catalogue.user_ids[table["user"].to_numpy(np.int64)],
            "category_id": catalogue.category_ids[table["category"].to_numpy(np.int64)],
            "query": table["query"].to_numpy(object),
            "searches": table["searches"].to_numpy(np.int64),
            "last_searched_at": pd.to_datetime(
                table["t"].to_numpy(np.float64) * 86_400.0, unit="s", utc=True
            ),
            "contribution": table["contribution"].to_numpy(np.float64),
        }
    )


#: The map's file in a saved model's folder (decay's and neural's).
QUERY_MAP_FILE = "query_map.npz"


def save_model_map(qmap: QueryCategoryMap | None, directory: Path) -> None:
    """Write a model's map into its folder; none: remove the file, so no stale one stays."""
    path = directory / QUERY_MAP_FILE
    if qmap is None:
        path.unlink(missing_ok=True)
    else:
        qmap.save(path)


def load_model_map(directory: Path) -> QueryCategoryMap | None:
    """A model folder's map; None for a folder saved before searches (or without any)."""
    path = directory / QUERY_MAP_FILE
    return QueryCategoryMap.load(path) if path.is_file() else None
