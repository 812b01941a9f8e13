"""The query → category map on hand-built logs whose right answers are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ebbtide.errors import ConfigError, NotFittedError
from ebbtide.features.queries import QueryCategoryMap, normalise_queries

MINUTE = 1 / 1440
RUNNING, DRESS, PHONES, FOOD = 0, 1, 2, 3


def _log(sessions: list[tuple[str, list[int]]]) -> dict[str, np.ndarray]:
    """One user per session: a search at day 0, then one engagement a minute with each
    category listed, in order."""
    search_user, queries, event_user, event_t, event_category = [], [], [], [], []
    for user, (query, categories) in enumerate(sessions):
        search_user.append(user)
        queries.append(query)
        for rank, category in enumerate(categories, start=1):
            event_user.append(user)
            event_t.append(rank * MINUTE)
            event_category.append(category)
    return {
        "search_user": np.array(search_user),
        "search_t": np.zeros(len(search_user)),
        "queries": np.array(queries, dtype=object),
        "event_user": np.array(event_user, dtype=np.int64),
        "event_t": np.array(event_t, dtype=np.float64),
        "event_category": np.array(event_category, dtype=np.int64),
    }


def _shoes_and_apples(apple_searches: int) -> dict[str, np.ndarray]:
    """A shop where "shoes" is shared by two categories and "apple" by two meanings."""
    return _log(
        [("running shoes", [RUNNING])] * 10
        + [("dress shoes", [DRESS])] * 10
        + [("apple pie", [FOOD])] * 10
        + [("apple juice", [FOOD])] * 10
        + [("apple", [PHONES])] * apple_searches
    )


def test_shared_word_splits_and_the_other_words_decide() -> None:
    qmap = QueryCategoryMap().fit(**_shoes_and_apples(10))
    cats, probs = qmap.predict(["trail running shoes", "shoes", "black dress shoes"], k=2)
    assert cats[0, 0] == RUNNING and probs[0, 0] > 0.9
    assert set(cats[1]) == {RUNNING, DRESS}
    assert probs[1, 0] == pytest.approx(probs[1, 1]) and probs[1].sum() > 0.9
    assert cats[2, 0] == DRESS and probs[2, 0] > 0.9


def test_exact_query_seen_often_follows_its_counts_else_its_words() -> None:
    often = QueryCategoryMap().fit(**_shoes_and_apples(10))
    assert often.top1(["apple", "Apple!", "fresh apple"]).tolist() == [PHONES, PHONES, FOOD]
    once = QueryCategoryMap(min_users=1).fit(**_shoes_and_apples(1))
    cats, probs = once.predict(["apple"], k=2)
    assert cats[0].tolist() == [FOOD, PHONES]  # one search is not enough against 20
    assert probs[0, 1] > 0.25  # but it counts: (1 + β P_words) / (1 + β)


def test_unseen_query_gets_the_prior() -> None:
    log = _log([("running shoes", [RUNNING])] * 6 + [("apple", [PHONES])] * 3)
    qmap = QueryCategoryMap().fit(**log)
    cats, probs = qmap.predict(["umbrella", "", None], k=3)
    assert np.all(cats[:, :2] == [RUNNING, PHONES])
    assert np.allclose(probs[:, :2], [6 / 9, 3 / 9])
    assert np.all(cats[:, 2] == -1) and np.all(probs[:, 2] == 0)  # two categories only


def test_first_engagements_count_more_and_other_users_none() -> None:
    log = _log([("lamp", [FOOD, PHONES, PHONES])])
    # another user engages with DRESS right after: not this search's doing
    log["event_user"] = np.r_[log["event_user"], 7]
    log["event_t"] = np.r_[log["event_t"], MINUTE]
    log["event_category"] = np.r_[log["event_category"], DRESS]
    qmap = QueryCategoryMap(query_prior=1e-6, min_users=1).fit(**log)
    cats, probs = qmap.predict(["lamp"], k=3)
    # weights 1, 1/2, 1/3 normalised: the first view outweighs the next two together
    assert cats[0].tolist() == [FOOD, PHONES, -1]
    assert probs[0, :2] == pytest.approx([6 / 11, 5 / 11], rel=1e-4)


def test_window_next_search_and_the_past_bound_the_credit() -> None:
    hour = 1 / 24
    qmap = QueryCategoryMap(window_days=2 * hour, query_prior=1e-6, min_users=1).fit(
        search_user=np.array([0, 0, 1, 2]),
        search_t=np.array([0.0, 10 * MINUTE, 0.0, 5.0]),
        queries=np.array(["tea", "shoes", "coffee", "phone"], dtype=object),
        event_user=np.array([0, 1, 1, 2]),
        event_t=np.array([11 * MINUTE, 3 * hour, 1 * hour, 5.0 - MINUTE]),
        event_category=np.array([RUNNING, DRESS, FOOD, PHONES]),
    )
    assert qmap.queries_.tolist() == ["coffee", "shoes"]  # "tea" ended, "phone" came after
    assert qmap.top1(["coffee", "shoes"]).tolist() == [FOOD, RUNNING]
    assert qmap.n_searches_ == 4 and qmap.n_attributed_ == 2


def test_one_users_words_are_not_kept() -> None:
    """A query or word only one user searched stays out of the map (and of a saved model)."""
    log = _log([("running shoes", [RUNNING])] * 3 + [("jane doe shoes", [DRESS])] * 2)
    log["search_user"][-1] = log["event_user"][-1] = 3  # the same user, a day later
    log["search_t"][-1], log["event_t"][-1] = 1.0, 1.0 + MINUTE
    qmap = QueryCategoryMap().fit(**log)
    assert qmap.queries_.tolist() == ["running shoes"]
    assert qmap.words_.tolist() == ["running", "shoes"]  # "jane", "doe": one user's
    assert qmap.top1(["jane doe"]).tolist() == [RUNNING]  # unknown words: the prior
    kept = QueryCategoryMap(min_users=1).fit(**log)
    assert "jane" in kept.words_ and kept.top1(["jane doe"]).tolist() == [DRESS]


def test_uncategorised_engagements_are_left_out() -> None:
    log = _log([("socks", [-1, RUNNING])])
    qmap = QueryCategoryMap(query_prior=1e-6, min_users=1).fit(**log)
    cats, probs = qmap.predict(["socks"], k=1)
    assert cats[0, 0] == RUNNING and probs[0, 0] == pytest.approx(1.0, rel=1e-5)


def test_words_are_normalised_in_any_script() -> None:
    assert normalise_queries(["Café  AU-lait", "CAFÉ au lait", "ＴＥＡ", "红茶 绿茶"]).tolist() == [
        "café au lait",
        "café au lait",
        "tea",
        "红茶 绿茶",
    ]
    log = _log([("Café au lait", [FOOD])] * 3 + [("红茶", [PHONES])] * 3)
    assert QueryCategoryMap().fit(**log).top1(["CAFÉ", "红茶 杯"]).tolist() == [FOOD, PHONES]


def test_saved_map_answers_the_same(tmp_path: Path) -> None:
    qmap = QueryCategoryMap(window_days=0.5).fit(**_shoes_and_apples(2))
    path = qmap.save(tmp_path / "map.npz")
    again = QueryCategoryMap.load(path)
    asked = ["apple", "running shoes", "shoes", "nothing known"]
    for got, want in zip(again.predict(asked, k=3), qmap.predict(asked, k=3), strict=True):
        assert np.array_equal(got, want)
    assert again.window_days == 0.5 and again.n_searches_ == qmap.n_searches_


def test_no_engagement_at_all_and_bad_settings() -> None:
    with pytest.raises(NotFittedError):
        QueryCategoryMap().predict(["tea"])
    with pytest.raises(ConfigError, match="word_prior"):
        QueryCategoryMap(word_prior=0).fit(**_log([("tea", [FOOD])]))
    empty = _log([("tea", [])])
    qmap = QueryCategoryMap().fit(**empty, n_categories=4)
    cats, probs = qmap.predict(["tea"], k=2)
    assert np.all(cats == -1) and np.all(probs == 0)
    with pytest.raises(ConfigError, match="k="):
        qmap.predict(["tea"], k=0)


def test_many_searches_in_one_pass() -> None:
    """20,000 searches over 50 categories, two words each from the category's own
    vocabulary and a third shared by all: the words are learned, whatever their order."""
    rng = np.random.default_rng(0)
    n, n_cat = 20_000, 50
    truth = rng.integers(0, n_cat, n)
    words = rng.integers(0, 6, (n, 2))
    queries = np.array([f"w{c}x{a} w{c}x{b} cheap" for c, (a, b) in zip(truth, words, strict=True)])
    noisy = np.where(rng.random(n) < 0.7, truth, rng.integers(0, n_cat, n))
    qmap = QueryCategoryMap().fit(
        search_user=np.arange(n),
        search_t=rng.uniform(0, 30, n),
        queries=queries,
        event_user=np.arange(n),
        event_t=np.zeros(n),  # before each search: credits nothing
        event_category=noisy,
    )
    assert qmap.n_attributed_ == 0
    qmap = QueryCategoryMap().fit(
        search_user=np.arange(n),
        search_t=np.zeros(n),
        queries=queries,
        event_user=np.arange(n),
        event_t=np.full(n, MINUTE),
        event_category=noisy,
    )
    fresh = rng.integers(0, n_cat, 1000)
    asked = [f"cheap w{c}x{rng.integers(0, 6)}" for c in fresh]
    assert np.mean(qmap.top1(asked) == fresh) > 0.95
