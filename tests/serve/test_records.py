"""The live service's row checks agree with `ingest`, and posted bodies are read right.

The heart is `test_agrees_with_jsonl_ingest`: random records, valid and broken, are both
checked by `validate_rows` and written as a JSON Lines file that `ingest_file` loads
(format ``generic``); each row must get the same reason and detail, and each valid row
the same stored values. Every line carries a unique, unmapped ``n`` key, so a quarantined
row is found by its raw text (the JSON Lines quarantine has no line numbers).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ebbtide.errors import InputFormatError
from ebbtide.ingest import ValidationRules, ingest_file
from ebbtide.serve.records import (
    _PLAIN_NUMBER,
    REASONS,
    BodyError,
    LiveEvent,
    RawRow,
    _epoch,
    _float_text,
    _plain_time_us,
    parse_body,
    validate_rows,
)
from ebbtide.serve.replay import CANONICAL
from ebbtide.store import EventStore

NOW = datetime(2018, 1, 1, tzinfo=UTC)
RULES = ValidationRules(max_id_length=16)
MAPPING = CANONICAL  # the columns as the service posts them, time as ISO 8601


@pytest.fixture(scope="module")
def con():
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        yield connection


def _check(record: dict, rules: ValidationRules = RULES):
    return validate_rows([RawRow(1, record)], rules, NOW)[0]


def _valid(**fields) -> dict:
    record = {"user_id": "u1", "item_id": "i1", "behavior": "view", "ts": "2017-11-25 08:00:00"}
    record.update(fields)
    return record


# -- the agreement with ingest ---------------------------------------------------------------

texts = st.text(
    st.sampled_from(["a", "B", "7", "-", " ", "\u00a0", "\t", "é", "字", "😀", "\\", '"', "İ"]),
    max_size=6,
)
simple_ids = st.text("abc0123", min_size=1, max_size=5)
ids = st.one_of(
    simple_ids,
    simple_ids,
    simple_ids,
    st.integers(0, 10**6).map(str),
    texts,
    st.text("x😀é", min_size=3, max_size=20),  # about the 16-byte limit
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "  ", " \u00a0 ", "\u00a0", None]),
)
optional_texts = st.one_of(
    st.none(), texts, st.integers(0, 99), st.sampled_from([True, {"a": [1.5, 1e21]}, [1e-7]])
)
behaviors = st.one_of(
    st.sampled_from(["view", "cart", "fav", "buy"]),
    st.sampled_from(["view", "cart", "fav", "buy"]),
    st.sampled_from(["VIEW", " Buy ", "buy\u00a0", " fav\u00a0", "vİew", "\tcart", "pv", ""]),
    st.sampled_from([None, 0, True, ["view"]]),
)
good_times = st.datetimes(datetime(1991, 1, 1), datetime(2017, 12, 31)).map(
    lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000)
)
times = st.one_of(
    good_times.map(lambda t: t.isoformat(sep=" ", timespec="seconds")),
    good_times.map(lambda t: t.isoformat(sep=" ", timespec="seconds")),
    good_times.map(lambda t: t.isoformat(timespec="milliseconds") + "Z"),
    good_times.map(lambda t: t.strftime("%Y-%m-%dT%H:%M%z") + "+05:30"),
    good_times.map(lambda t: t.strftime("%Y-%m-%d")),
    st.sampled_from(
        [
            "2017-11-25 08:00:00.1234567",
            " 2017-11-25 08:00:00 ",
            "2017-11-25 08:00:00 Europe/Berlin",
            "2017-11-25 24:00:00",
            "2017/11/25 08:00",
            "2017-11-25 08:00:00+0800",
            "2017-11-25 08:00:00-08",
            "1989-12-31 23:59:59.999999",
            "1990-01-01 00:00:00",
            "2018-01-02 00:00:00",
            "2018-01-02 00:00:00.000001",
            "2018-01-02T08:00:00+08:00",
            "2017-02-29",
            "2017-13-01",
            "yesterday",
            "infinity",
            "epoch",
            "1511539200",
            "",
        ]
    ),
    st.sampled_from([None, True, {"t": 1}]),
)
numbers = st.one_of(
    st.none(),
    st.integers(-5, 2_000_000_000),
    st.floats(-10, 1e10, allow_nan=False),
    st.sampled_from(["1.5", " 2 ", "-3", "2.0", "1e9", "1000000001", "abc", "", "  ", "\u00a0"]),
    st.sampled_from(["nan", "-inf", "1_000", "1e400", "+-1", "\t4\n", "0x10", True, [1]]),
)


@st.composite
def records(draw) -> dict:
    """A record whose fields may be anything; half of them have good ids and behaviour,
    so the later checks (time, price, quantity) get their turn."""
    tidy = draw(st.booleans())
    record = {"user_id": draw(simple_ids), "item_id": draw(simple_ids)} if tidy else {}
    if tidy:
        record["behavior"] = draw(st.sampled_from(["view", "cart", "fav", "buy"]))
    for name, strategy in [
        ("user_id", ids),
        ("item_id", ids),
        ("category_id", st.one_of(ids, optional_texts)),
        ("behavior", behaviors),
        ("ts", times),
        ("price", numbers),
        ("quantity", numbers),
        ("brand", optional_texts),
        ("session_id", optional_texts),
    ]:
        if tidy and name in record:
            continue
        if draw(st.integers(0, 9)):  # a tenth of the fields are left out
            record[name] = draw(strategy)
    return record


def _filler(i: int) -> dict:
    return {"user_id": f"f{i}", "item_id": "i", "behavior": "buy", "ts": "2017-11-25"}


#: Lines that are not event objects (the last one: a lone surrogate), and blank lines.
junk_lines = st.sampled_from(
    ["{broken", "42", '"x"', "null", '[{"user_id": "a"}]', "\t", '{"user_id": "\\ud800"}']
)
blank_lines = st.sampled_from(["", "   ", "\u00a0"])


def _lines(drawn: list) -> list[str]:
    return [
        item if isinstance(item, str) else orjson.dumps({**item, "n": i}).decode()
        for i, item in enumerate(drawn)
    ]


def _checks(lines: list[str]):
    if not "".join(lines).strip():
        return []  # parse_body refuses a blank body
    body = "".join(line + "\n" for line in lines).encode()
    return validate_rows(parse_body(body, "application/x-ndjson"), RULES, NOW)


@pytest.mark.filterwarnings("ignore::ebbtide.errors.DataQualityWarning")
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.one_of(records(), records(), records(), junk_lines, blank_lines), max_size=12))
@example(  # every reason at least once, and the odd casts DuckDB answers
    drawn=[
        _valid(item_id=7, category_id=[1e-7], price=" 2 ", quantity="2.0", brand={"b": 1e21}),
        _valid(user_id=" \u00a0 "),
        _valid(item_id=None),
        _valid(category_id="😀" * 5),
        _valid(behavior=" Buy\u00a0"),
        _valid(behavior="vİew", ts="2017-11-25 08:00:00 Europe/Berlin", price="1_000"),
        _valid(behavior="pv"),
        _valid(ts="2017-11-25 24:00:00"),
        _valid(ts="2017-02-29"),
        _valid(ts="1989-12-31 23:59:59.999999"),
        _valid(ts="2018-01-02 00:00:00.000001"),
        _valid(ts="2018-01-02T08:00:00+08:00", price="nan"),
        _valid(price=-0.5),
        _valid(price="+-1"),
        _valid(quantity=1_000_000_001),
        _valid(quantity="\u00a0"),
        "{broken",
        "",
        '{"user_id": "\\ud800"}',
    ]
)
def test_agrees_with_jsonl_ingest(tmp_path_factory, drawn):
    bad = sum(not c.ok for c in _checks(_lines(drawn)))
    # ingest refuses a file whose first rows are mostly bad: pad it with valid rows.
    lines = _lines(drawn + [_filler(i) for i in range(bad + 1)])
    checks = _checks(lines)
    path = tmp_path_factory.mktemp("agree") / "events.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    with EventStore(":memory:") as store:
        summary = ingest_file(store, path, "generic", mapping=MAPPING, rules=RULES, now=NOW)
        quarantined = Counter(
            (q["raw"], q["reason"], q["detail"]) for q in store.quarantine().to_pylist()
        )
        stored = set(
            store.con.execute(
                """SELECT u.user_id, i.item_id, c.category_id, e.behavior, epoch_us(e.ts),
                    e.price, e.quantity, e.brand, e.session_id
                FROM events e JOIN users u USING (user_idx) JOIN items i USING (item_idx)
                LEFT JOIN categories c USING (category_idx)"""
            ).fetchall()
        )
    expected = set()
    rejected = Counter()
    for check in checks:
        assert check.row.raw == lines[check.line - 1]  # the line it came from
        if check.reason is None:
            e = check.event
            micros = round(e.ts * 1_000_000)
            assert e.ts == _epoch(micros)
            values = (e.user_id, e.item_id, e.category_id, e.behavior, micros, e.price)
            expected.add((*values, e.quantity, e.brand, e.session_id))
        else:
            assert check.reason in REASONS
            # The ingest gives no detail for a line that is not an object; we say why.
            detail = None if check.reason == "malformed_json" else check.detail
            rejected[(check.row.raw, check.reason, detail)] += 1
    assert rejected == quarantined
    assert stored == expected
    assert summary.rows_read == len(checks)


# -- DuckDB's casts, piece by piece ---------------------------------------------------------

time_parts = st.tuples(
    st.integers(0, 10000).map(lambda y: f"{y:04d}"),
    st.integers(0, 13).map(lambda m: f"{m:02d}"),
    st.integers(0, 32).map(lambda d: f"{d:02d}"),
    st.sampled_from(["", "T", " ", "t", "  "]),
    st.integers(0, 24).map(lambda h: f"{h:02d}"),
    st.sampled_from([":00", ":59", ":5", ":60", ""]),
    st.sampled_from([":00", ":59.5", ":01.", ":30.123456789", ":30.1234567891", ""]),
    st.sampled_from(["", "Z", "z", "+08", "-0330", "+08:00", "+23:59", "+24:00", " +01", "+1"])
    | st.sampled_from(["+08:75", "-0099", "-00:30", "+00", "+99", "+08:00:30"]),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(time_parts, min_size=1, max_size=20))
def test_plain_times_read_as_duckdb_does(con, parts):
    texts = []
    for year, month, day, sep, hour, minute, second, zone in parts:
        if sep:
            texts.append(f"{year}-{month}-{day}{sep}{hour}{minute}{second}{zone}")
        else:
            texts.append(f"{year}-{month}-{day}{zone}")
    got = con.execute(
        "SELECT epoch_us(TRY_CAST(x AS TIMESTAMPTZ)), epoch(TRY_CAST(x AS TIMESTAMPTZ))"
        " FROM unnest($1::VARCHAR[]) WITH ORDINALITY u(x, i) ORDER BY i",
        [texts],
    ).fetchall()
    for text, (micros, epoch) in zip(texts, got, strict=True):
        ours = _plain_time_us(text)
        if isinstance(ours, int):  # the plain rules read it: DuckDB must agree exactly
            assert (ours, _epoch(ours)) == (micros, epoch), text


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-(10**17), 10**17), min_size=1, max_size=100))
def test_epoch_seconds_as_duckdb_computes_them(con, micros):
    got = con.execute(
        "SELECT epoch(make_timestamptz(u)) FROM unnest($1::BIGINT[]) WITH ORDINALITY t(u, i)"
        " ORDER BY i",
        [micros],
    ).fetchall()
    assert [_epoch(u) for u in micros] == [g[0] for g in got]


number_texts = st.tuples(
    st.sampled_from(["", " ", "\t", "\n ", "\x0b", "\xa0", "\x1c"]),
    st.sampled_from(["", "+", "-", "+-", "--"]),
    st.sampled_from(["", "0", "7", "12", "007", "1_0", "٣", "9" * 30]),
    st.sampled_from(["", ".", ".5", ".25", "._5", ".0001"]),
    st.sampled_from(["", "e3", "E-2", "e+400", "e-400", "e", "e_1"]),
    st.sampled_from(["", " ", "\r", "\x0c", "\u3000", "x"]),
).map("".join)


@settings(max_examples=40, deadline=None)
@given(st.lists(number_texts, min_size=1, max_size=30))
def test_plain_numbers_read_as_duckdb_does(con, texts):
    got = con.execute(
        "SELECT TRY_CAST(x AS DOUBLE) FROM unnest($1::VARCHAR[]) WITH ORDINALITY u(x, i)"
        " ORDER BY i",
        [texts],
    ).fetchall()
    for text, (value,) in zip(texts, got, strict=True):
        if _PLAIN_NUMBER.fullmatch(text):
            assert float(text) == value, text


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_numbers_read_as_duckdb_json_writes_them(con, values):
    lines = [orjson.dumps({"k": v}).decode() for v in values]
    got = con.execute(
        "SELECT json_extract_string(x, '$.k') FROM unnest($1::VARCHAR[]) WITH ORDINALITY"
        " u(x, i) ORDER BY i",
        [lines],
    ).fetchall()
    assert [_float_text(v) for v in values] == [g[0] for g in got]


@pytest.mark.parametrize(
    "value, text",
    [(1e5, "100000.0"), (1e21, "1e21"), (1e-7, "1e-7"), (1e-6, "0.000001"), (-0.0, "-0.0")],
)
def test_float_text_examples(value, text):
    assert _float_text(value) == text


def test_odd_casts_are_duckdbs():
    checks = validate_rows(
        [
            RawRow(1, _valid(ts="2017-11-25 08:00:00 Europe/Berlin", price="1_000")),
            RawRow(2, _valid(ts="2017-11-25 24:00:00", quantity="+-1")),
            RawRow(3, _valid(ts="2017-02-29")),
            RawRow(4, _valid(price="nan")),
        ],
        ValidationRules(),
        NOW,
    )
    berlin = datetime(2017, 11, 25, 7, tzinfo=UTC).timestamp()
    assert (checks[0].event.ts, checks[0].event.price) == (berlin, 1000.0)
    assert (checks[1].reason, checks[1].detail) == ("bad_quantity", "quantity +-1")
    assert (checks[2].reason, checks[2].detail) == ("bad_time", "time 2017-02-29")
    assert (checks[3].reason, checks[3].detail) == ("bad_price", "price nan")


# -- rules, one at a time -------------------------------------------------------------------


def test_a_typical_row():
    check = _check(_valid(item_id=42, category_id=" 7 ", price=9.5, quantity="2", brand=""))
    assert check.ok and check.detail is None
    assert check.event == LiveEvent(
        "u1", "42", "7", None, 0, datetime(2017, 11, 25, 8, tzinfo=UTC).timestamp(), 9.5, 2,
        None, None,
    )  # fmt: skip


SEND = "send a string or a number"


@pytest.mark.parametrize(
    "fields, reason, detail",
    [
        ({"user_id": "  "}, "missing_user_id", None),
        ({"item_id": None}, "missing_item_id", None),
        ({"user_id": True}, "missing_user_id", f"user_id is a JSON boolean; {SEND}"),
        ({"item_id": {"id": 1}}, "missing_item_id", f"item_id is a JSON object; {SEND}"),
        ({"user_id": "é" * 9}, "id_too_long", "id of 18 bytes"),
        ({"behavior": "pv"}, "unknown_behavior", "behaviour pv"),
        ({"behavior": None}, "unknown_behavior", "behaviour (empty)"),
        ({"behavior": "Search"}, "excluded_behavior",
         "behaviour Search: the live service takes view, cart, fav and buy; load it with"
         " `ebbtide ingest`"),
        ({"ts": "soon"}, "bad_time", "time soon"),
        ({"ts": None}, "bad_time", "time (empty)"),
        ({"ts": "1970-01-01"}, "time_out_of_range", "time 1970-01-01"),
        ({"price": "x"}, "bad_price", "price x"),
        ({"price": -1e5}, "negative_price", "price -100000.0"),
        ({"quantity": 1.5}, "bad_quantity", "quantity 1.5"),
        ({"quantity": 1_000_000_001}, "bad_quantity", "quantity 1000000001"),
    ],
)  # fmt: skip
def test_reasons(fields, reason, detail):
    check = _check(_valid(**fields))
    assert (check.reason, check.detail) == (reason, detail)


def test_numbers_as_ids_read_as_the_ingest_reads_them():
    for value, text in [(42, "42"), (-0, "0"), (1.5, "1.5"), (1e5, "100000.0"), (1e-7, "1e-7")]:
        assert _check(_valid(item_id=value)).event.item_id == text


def test_a_checked_event_is_a_frozen_live_event():
    event = _check(_valid(price=1.0)).event
    assert type(event) is LiveEvent
    assert event == LiveEvent("u1", "i1", None, None, 0, event.ts, 1.0, None, None, None)
    assert hash(event) == hash(LiveEvent(*(getattr(event, f) for f in LiveEvent.__slots__)))
    with pytest.raises(FrozenInstanceError):
        event.ts = 0.0


def test_text_duckdb_cannot_take_is_no_time():
    check = _check(_valid(ts="2017-11-25 08:00:00\ud800"))  # a lone surrogate
    assert check.reason == "bad_time"


def test_checks_run_in_the_ingest_order():
    check = _check({"item_id": "", "behavior": "pv", "ts": "x", "price": "y"})
    assert check.reason == "missing_user_id"
    check = _check(_valid(behavior="pv", ts="x", price="y"))
    assert check.reason == "unknown_behavior"


def test_epoch_number_time_is_a_service_extension():
    check = _check(_valid(ts=1511596800.1234567))
    assert check.ok
    assert round(check.event.ts * 1e6) == 1511596800123457  # the store's microsecond
    assert _check(_valid(ts=1511596800)).event.ts == 1511596800.0
    check = _check(_valid(ts=1.5e12))  # milliseconds by mistake
    assert (check.reason, check.detail) == ("time_out_of_range", "time 1500000000000.0")


# -- bodies ----------------------------------------------------------------------------------

EVENT = b'{"user_id": "u1", "item_id": "i1", "behavior": "view", "ts": "2017-11-25"}'


def test_json_array():
    rows = parse_body(b"[" + EVENT + b", " + EVENT + b"]", "application/json; charset=utf-8")
    assert [(r.line, r.obj["item_id"]) for r in rows] == [(1, "i1"), (2, "i1")]
    assert orjson.loads(rows[0].raw) == orjson.loads(EVENT)


def test_ndjson_by_content_type_and_by_sniffing():
    body = EVENT + b"\r\n\n  \n" + EVENT
    for content_type in ("application/x-ndjson", "application/jsonl", None, "text/plain"):
        rows = parse_body(body, content_type)
        assert [r.line for r in rows] == [1, 4]
        assert rows[0].raw == EVENT.decode()
    assert parse_body(b"  \n[" + EVENT + b"]", None)[0].line == 1  # sniffed array


def test_one_object_even_pretty_printed():
    pretty = orjson.dumps(orjson.loads(EVENT), option=orjson.OPT_INDENT_2)
    rows = parse_body(pretty, "application/json")
    assert len(rows) == 1 and rows[0].obj["user_id"] == "u1"


def test_ndjson_with_one_broken_line():
    body = EVENT + b"\n{broken\n" + EVENT + b"\n42\n"
    rows = parse_body(body, "application/x-ndjson")
    checks = validate_rows(rows, ValidationRules(), NOW)
    assert [(c.line, c.reason) for c in checks] == [
        (1, None),
        (2, "malformed_json"),
        (3, None),
        (4, "malformed_json"),
    ]
    assert checks[1].row.raw == "{broken"
    assert checks[1].detail.startswith("line 2, column 2: ")
    assert checks[3].detail == "line 4 is a JSON number, not an object"


def test_non_object_array_elements():
    rows = parse_body(b'[1, "x", null, [], ' + EVENT + b"]", "application/json")
    checks = validate_rows(rows, ValidationRules(), NOW)
    assert [c.reason for c in checks] == ["malformed_json"] * 4 + [None]
    assert checks[1].detail == "element 2 is a JSON string, not an object"
    assert checks[1].row.raw == '"x"'


@pytest.mark.parametrize(
    "body, content_type, words",
    [
        (b"[" + EVENT + b",", "application/json", "not a valid JSON array"),
        (b'"events"', "application/json", "a JSON string"),
        (b"42", None, "a JSON number"),
        (b"   \n ", None, "empty"),
        (b"[\xff]", "application/json", "not UTF-8"),
    ],
)
def test_unreadable_bodies(body, content_type, words):
    with pytest.raises(BodyError, match=words) as caught:
        parse_body(body, content_type)
    assert isinstance(caught.value, InputFormatError)
    assert "application/x-ndjson" in str(caught.value)  # says what to send instead


def test_raw_is_bounded():
    rows = parse_body(b'{"user_id": "' + b"x" * 5000 + b'"}', "application/x-ndjson")
    assert len(rows[0].raw) == 1000


# -- events ----------------------------------------------------------------------------------

BASE = LiveEvent("u", "i", "c", "name", 3, 1511596800.25, 9.5, 2, "b", "s")


def test_identity_is_equal_for_equal_events():
    same = LiveEvent("u", "i", "c", "another name", 3, 1511596800.25, 9.5, 2, "b", "s")
    assert BASE.identity() == same.identity()  # the category name is no part of it
    assert len(BASE.identity()) == 16
    zero, minus_zero = (LiveEvent("u", "i", None, None, 0, 1, p, *[None] * 3) for p in (0.0, -0.0))
    assert zero.identity() == minus_zero.identity()  # as DuckDB compares them


@pytest.mark.parametrize(
    "field, other",
    [
        ("user_id", "v"),
        ("item_id", "j"),
        ("category_id", None),
        ("behavior", 0),
        ("ts", 1511596800.250001),
        ("price", None),
        ("quantity", 1),
        ("brand", None),
        ("session_id", "t"),
    ],
)
def test_identity_differs_in_any_identity_field(field, other):
    changed = LiveEvent(**{**{f: getattr(BASE, f) for f in LiveEvent.__slots__}, field: other})
    assert changed.identity() != BASE.identity()


@given(
    st.builds(
        LiveEvent,
        st.text(),
        st.text(),
        st.none() | st.text(),
        st.none() | st.text(),
        st.integers(0, 3),
        st.floats(allow_nan=False, allow_infinity=False),
        st.none() | st.floats(allow_nan=False, allow_infinity=False),
        st.none() | st.integers(0, 10**9),
        st.none() | st.text(),
        st.none() | st.text(),
    )
)
@settings(max_examples=50, deadline=None)
def test_json_round_trip(event):
    line = event.to_json()
    assert b"\n" not in line
    back = LiveEvent.from_json(line)
    assert back == event and math.copysign(1, back.ts) == math.copysign(1, event.ts)
    assert back.identity() == event.identity()
