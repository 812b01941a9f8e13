"""Property-based tests of ingest: the accounting always reconciles, parsing round-trips.

Each example writes a small Taobao-format file (no header: ``user,item,category,behaviour,
epoch_seconds``) to a temporary directory and loads it into a fresh in-memory store.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ebbtide.ingest import ValidationRules, ingest_file
from ebbtide.schema import Behavior
from ebbtide.store import EventStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EARLIEST = int(datetime(1990, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(NOW.timestamp())
TAOBAO_WORDS = {
    "pv": Behavior.VIEW,
    "cart": Behavior.CART,
    "fav": Behavior.FAV,
    "buy": Behavior.BUY,
}
FAST = settings(max_examples=25, deadline=None)


def _ingest(lines: list[str], rules: ValidationRules | None = None, *, twice: bool = False):
    """Write `lines` to a file and ingest it into a fresh store (twice if asked).

    Returns the summaries, what the store held (events, quarantined rows) after each
    ingest, and the events after the first.
    """
    with tempfile.TemporaryDirectory(prefix="ebbtide-prop-") as tmp:
        path = Path(tmp) / "UserBehavior.csv"
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        with EventStore(":memory:") as store:
            summaries = [ingest_file(store, path, "taobao", rules=rules, now=NOW)]
            held = [(store.stats().events, store.quarantine().num_rows)]
            events = store.events().to_pylist()
            if twice:
                summaries.append(ingest_file(store, path, "taobao", rules=rules, now=NOW))
                held.append((store.stats().events, store.quarantine().num_rows))
    return summaries, held, events


# -- strategies -----------------------------------------------------------------------------
ids = st.text("0123456789abcdefXYZ_-", min_size=1, max_size=4)
times = st.integers(min_value=EARLIEST, max_value=LATEST)


@st.composite
def valid_rows(draw) -> tuple[str, tuple]:
    """A valid row's text and its canonical identity (what makes two rows one event)."""
    user, item = draw(ids), draw(ids)
    category = draw(st.one_of(st.just(""), ids))
    word = draw(st.sampled_from(sorted(TAOBAO_WORDS)))
    word = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    ts = draw(times)
    key = (user, item, category or None, TAOBAO_WORDS[word.lower()], ts)
    return f"{user},{item},{category},{word},{ts}", key


junk = st.text(
    st.characters(codec="utf-8", exclude_categories=("C", "Z"), exclude_characters=","),
    min_size=1,
    max_size=30,
)

#: (reason, strategy of a bad line) for bad rows with exactly one defect each.
BAD_ROWS = [
    ("wrong_field_count", st.builds(lambda u, i: f"{u},{i},1,pv", ids, ids)),
    ("wrong_field_count", st.builds(lambda u, t: f"{u},1,1,pv,{t},extra", ids, times)),
    ("wrong_field_count", junk),  # printable text without a comma: one field
    ("unknown_behavior", st.builds(lambda u, w, t: f"{u},1,1,{w},{t}", ids, ids, times)),
    ("bad_time", st.builds(lambda u, t: f"{u},1,1,pv,{t}", ids, st.sampled_from(["abc", "nan"]))),
    ("bad_time", st.builds(lambda u: f"{u},1,1,pv,", ids)),
    (
        "time_out_of_range",
        st.builds(lambda u, t: f"{u},1,1,buy,{t}", ids, st.sampled_from([0, -5, 1511539200000])),
    ),
    ("missing_user_id", st.builds(lambda i, t: f",{i},1,pv,{t}", ids, times)),
    ("missing_item_id", st.builds(lambda u, t: f"{u},,1,cart,{t}", ids, times)),
]
bad_rows = st.one_of(
    *(strategy.map(lambda line, r=reason: (r, line)) for reason, strategy in BAD_ROWS)
)


@st.composite
def mixed_files(draw):
    """Lines of a Taobao file: valid rows, exact copies of them and bad rows, shuffled.

    Bad rows are at most half the rows, so the file still passes the "is this Taobao at
    all" check on its first lines. Blank lines are sprinkled in; they are not rows.
    """
    valid = draw(st.lists(valid_rows(), min_size=1, max_size=20))
    copies = draw(st.lists(st.sampled_from(valid), max_size=8))
    bad = draw(st.lists(bad_rows, max_size=20))[: len(valid) + len(copies)]
    rows = [("valid", line, key) for line, key in valid + copies]
    rows += [(reason, line, None) for reason, line in bad]
    rows = draw(st.permutations(rows))
    blanks = draw(st.lists(st.integers(0, len(rows)), max_size=3))
    lines = [line for _, line, _ in rows]
    for at in sorted(blanks, reverse=True):
        lines.insert(at, "")
    return lines, rows


# -- reconciliation -------------------------------------------------------------------------
@FAST
@given(mixed_files())
def test_every_row_is_accounted_for(data) -> None:
    lines, rows = data
    (first, second), (held, held_again), _ = _ingest(lines, twice=True)
    keys = [key for kind, _, key in rows if kind == "valid"]
    expected_reasons = Counter(kind for kind, _, _ in rows if kind != "valid")

    assert first.rows_read == sum(1 for line in lines if line.strip())
    assert first.rows_read == first.loaded + first.duplicates + first.quarantined
    assert first.loaded == len(set(keys))
    assert first.duplicates == len(keys) - len(set(keys))
    assert first.reasons == dict(expected_reasons)
    assert held == (first.loaded, first.quarantined)

    # The same file again changes nothing.
    assert second.already_ingested
    assert (second.loaded, second.rows_read, second.quarantined) == (
        0,
        first.rows_read,
        first.quarantined,
    )
    assert held_again == held


@FAST
@given(st.lists(valid_rows(), min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_same_rows_in_another_file_are_all_duplicates(rows, rng) -> None:
    lines = [line for line, _ in rows]
    shuffled = lines[:]
    rng.shuffle(shuffled)
    with tempfile.TemporaryDirectory(prefix="ebbtide-prop-") as tmp:
        first, second = Path(tmp) / "a.csv", Path(tmp) / "b.csv"
        first.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        # Same rows, other order and line endings: other bytes, so not the same file.
        second.write_text("".join(f"{line}\r\n" for line in shuffled), encoding="utf-8")
        with EventStore(":memory:") as store:
            a = ingest_file(store, first, "taobao", now=NOW)
            b = ingest_file(store, second, "taobao", now=NOW)
            events = store.stats().events
    assert not b.already_ingested
    assert (b.rows_read, b.loaded, b.duplicates, b.quarantined) == (len(rows), 0, len(rows), 0)
    assert events == a.loaded == len({key for _, key in rows})


# -- parsing --------------------------------------------------------------------------------
@FAST
@given(
    st.lists(
        st.integers(
            min_value=EARLIEST, max_value=int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
        ),
        min_size=1,
        max_size=30,
        unique=True,
    )
)
def test_epoch_seconds_round_trip(stamps) -> None:
    lines = [f"1,{i},1,pv,{ts}" for i, ts in enumerate(stamps)]
    rules = ValidationRules(latest=datetime(2030, 1, 2, tzinfo=UTC))
    (first,), _, events = _ingest(lines, rules)
    assert first.loaded == len(stamps)
    stored = {int(e["item_id"]): e["ts"] for e in events}
    assert stored == {i: datetime.fromtimestamp(ts, UTC) for i, ts in enumerate(stamps)}


printable_id = st.text(
    st.characters(codec="utf-8", exclude_categories=("C", "Z"), exclude_characters=",\"'")
    | st.just(" "),
    min_size=1,
    max_size=12,
).filter(lambda s: s == s.strip() and s.isprintable())


@FAST
@given(st.lists(st.tuples(printable_id, printable_id, printable_id), min_size=1, max_size=20))
def test_printable_unicode_ids_round_trip(triples) -> None:
    lines = [f"{u},{i},{c},buy,{1511539200 + n}" for n, (u, i, c) in enumerate(triples)]
    (first,), _, events = _ingest(lines)
    assert (first.loaded, first.quarantined) == (len(triples), 0)
    stored = sorted((e["user_id"], e["item_id"], e["category_id"]) for e in events)
    assert stored == sorted(triples)


@FAST
@given(
    st.lists(
        st.tuples(
            st.sampled_from(sorted(TAOBAO_WORDS)),
            st.lists(st.booleans(), min_size=4, max_size=4),
            st.sampled_from(["", " ", "  "]),
            st.sampled_from(["", " "]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_behaviour_words_are_case_insensitive(words) -> None:
    lines = []
    for n, (word, upper, before, after) in enumerate(words):
        cased = "".join(c.upper() if up else c for c, up in zip(word, upper, strict=False))
        lines.append(f"1,{n},1,{before}{cased}{after},1511539200")
    (first,), _, events = _ingest(lines)
    assert (first.loaded, first.quarantined) == (len(words), 0)
    stored = {int(e["item_id"]): e["behavior"] for e in events}
    assert stored == {n: TAOBAO_WORDS[word].code for n, (word, *_) in enumerate(words)}
