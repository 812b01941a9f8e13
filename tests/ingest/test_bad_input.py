"""A test per kind of bad input: bad rows are quarantined, bad files are refused.

Bad rows sit among good ones in an otherwise valid file: the ingest succeeds, every bad
row lands in quarantine with the right reason and its raw text, the good rows load, and
``rows_read == loaded + duplicates + quarantined`` holds exactly. A bad file fails fast
with `InputFormatError` (naming the expected columns and showing the offending line) and
leaves a store that already holds events exactly as it was.
"""

from __future__ import annotations

import gzip
import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ebbtide.errors import EbbtideError, InputFormatError
from ebbtide.ingest import REASONS, ColumnMapping, IngestSummary, ingest_file
from ebbtide.ingest.formats import REES46, RETAILROCKET, TAOBAO
from ebbtide.store import EventStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TS = 1_511_539_200  # 2017-11-24 16:00:00 UTC, a plain Taobao time stamp
TAOBAO_COLUMNS = ",".join(TAOBAO.columns)  # type: ignore[arg-type]
REES46_HEADER = ",".join(REES46.columns)  # type: ignore[arg-type]

#: Ten distinct valid Taobao rows; a bad row goes in the middle of them.
GOOD_TAOBAO = [f"{u},{100 + i},{7 + i % 3},pv,{TS + 60 * i}" for u in (1, 2) for i in range(5)]
GOOD_REES46 = [
    f"2019-10-01 00:00:{i:02d} UTC,view,{4400 + i},2103807459595387724,,shiseido,35.79,"
    f"{541312140 + i},sess-{i}"
    for i in range(8)
]
GENERIC = ColumnMapping(
    user_col="user",
    item_col="item",
    time_col="ts",
    behavior_col="behavior",
    price_col="price",
    time_format="epoch_s",
)
JSONL = ColumnMapping(
    user_col="user",
    item_col="item",
    time_col="ts",
    behavior_col="behavior",
    time_format="epoch_s",
    input_type="jsonl",
)


# -- helpers ------------------------------------------------------------------------------
def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def _lines(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _ingest(store: EventStore, path: Path, fmt: str = "taobao", **kwargs) -> IngestSummary:
    return ingest_file(store, path, fmt, now=NOW, **kwargs)


def _quarantine(store: EventStore) -> list[dict]:
    return store.quarantine().to_pylist()


def _assert_reconciled(store: EventStore, summary: IngestSummary) -> None:
    """The accounting identity, and the summary agrees with what the store holds."""
    assert summary.rows_read == summary.loaded + summary.duplicates + summary.quarantined
    assert sum(summary.reasons.values()) == summary.quarantined
    assert set(summary.reasons) <= set(REASONS)
    assert store.quarantine().num_rows == summary.quarantined
    assert store.stats().events == summary.loaded


def _one_bad_row(
    tmp_path: Path,
    bad: str | bytes,
    reason: str,
    *,
    fmt: str = "taobao",
    good: list[str] = GOOD_TAOBAO,
    header: str | None = None,
    **kwargs,
) -> dict:
    """Ingest `bad` amid good rows, check the accounting, return its quarantine row."""
    half = len(good) // 2
    head = "" if header is None else header + "\n"
    before, after = _lines(good[:half]), _lines(good[half:])
    bad_bytes = bad if isinstance(bad, bytes) else bad.encode("utf-8")
    data = (head + before).encode("utf-8") + bad_bytes + b"\n" + after.encode("utf-8")
    path = _write(tmp_path / "log.csv", data)
    with EventStore(tmp_path / "bad_row.duckdb") as store:
        summary = _ingest(store, path, fmt, **kwargs)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded, summary.duplicates, summary.quarantined) == (
            len(good) + 1,
            len(good),
            0,
            1,
        )
        assert summary.reasons == {reason: 1}
        (row,) = _quarantine(store)
    assert row["reason"] == reason
    return row


def _snapshot(store: EventStore) -> tuple:
    """Everything a failed ingest must leave untouched."""
    stats = store.stats().to_dict()
    quarantined = store.quarantine().num_rows
    ingests = store.con.execute("SELECT count(*) FROM ingests").fetchone()[0]
    dictionaries = store.con.execute(
        "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM items),"
        " (SELECT count(*) FROM categories)"
    ).fetchone()
    return stats, quarantined, ingests, dictionaries


@pytest.fixture
def loaded_store(tmp_path: Path):
    """An on-disk store that already holds events and one quarantined row."""
    path = _write(tmp_path / "first.csv", _lines([*GOOD_TAOBAO, "1,2,3,click,1511539200"]))
    with EventStore(tmp_path / "loaded.duckdb") as store:
        summary = _ingest(store, path)
        assert (summary.loaded, summary.quarantined) == (len(GOOD_TAOBAO), 1)
        yield store


def _refused(store: EventStore, path: Path, fmt: str = "taobao", **kwargs) -> str:
    """Ingest must raise InputFormatError and change nothing; return the message."""
    before = _snapshot(store)
    with pytest.raises(InputFormatError) as caught:
        _ingest(store, path, fmt, **kwargs)
    assert _snapshot(store) == before
    message = str(caught.value)
    assert "Traceback" not in message
    return message


# -- bad rows: time -------------------------------------------------------------------------
def test_unparseable_time_is_bad_time(tmp_path: Path) -> None:
    row = _one_bad_row(tmp_path, "1,2,3,pv,abc", "bad_time")
    assert row["raw"] == "1,2,3,pv,abc"
    assert row["time"] == "abc"
    assert "abc" in row["detail"]


def test_empty_time_is_bad_time(tmp_path: Path) -> None:
    row = _one_bad_row(tmp_path, "1,2,3,pv,", "bad_time")
    assert row["raw"] == "1,2,3,pv,"


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "-1",
        str((50_000 - 1970) * 31_556_952),  # year 50000 as epoch seconds
        str(TS * 1000),  # epoch milliseconds given to an epoch_s format
        "631151999",  # one second before 1990-01-01
        str(int(datetime(2026, 1, 3, tzinfo=UTC).timestamp())),  # after now + 1 day
    ],
    ids=["zero", "negative", "year-50000", "epoch-ms", "before-1990", "future"],
)
def test_out_of_range_time_is_quarantined(tmp_path: Path, value: str) -> None:
    line = f"1,2,3,pv,{value}"
    row = _one_bad_row(tmp_path, line, "time_out_of_range")
    assert row["raw"] == line
    assert row["time"] == value


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_time_is_bad_time(tmp_path: Path, value: str) -> None:
    line = f"1,2,3,pv,{value}"
    row = _one_bad_row(tmp_path, line, "bad_time")
    assert row["raw"] == line


def test_rees46_impossible_date_is_bad_time(tmp_path: Path) -> None:
    line = "2019-13-45 00:00:00 UTC,view,1,2,,b,1.0,5,s"
    row = _one_bad_row(
        tmp_path, line, "bad_time", fmt="rees46", good=GOOD_REES46, header=REES46_HEADER
    )
    assert row["raw"] == line


# -- bad rows: behaviour ------------------------------------------------------------------
@pytest.mark.parametrize("word", ["click", "view", "purchase", ""])
def test_unknown_behaviour_word(tmp_path: Path, word: str) -> None:
    # "view" and "purchase" are words of other formats, not Taobao's.
    line = f"1,2,3,{word},{TS}"
    row = _one_bad_row(tmp_path, line, "unknown_behavior")
    assert row["raw"] == line


def test_rees46_remove_from_cart_is_excluded(tmp_path: Path) -> None:
    line = "2019-10-01 00:00:00 UTC,remove_from_cart,1,2,,b,1.0,5,s"
    row = _one_bad_row(
        tmp_path, line, "excluded_behavior", fmt="rees46", good=GOOD_REES46, header=REES46_HEADER
    )
    assert row["raw"] == line
    assert row["behavior"] == "remove_from_cart"


# -- bad rows: ids --------------------------------------------------------------------------
@pytest.mark.parametrize("user", ["", "   "], ids=["empty", "blank"])
def test_missing_user_id(tmp_path: Path, user: str) -> None:
    line = f"{user},2,3,pv,{TS}"
    row = _one_bad_row(tmp_path, line, "missing_user_id")
    assert row["raw"] == line


def test_missing_item_id(tmp_path: Path) -> None:
    line = f"1,,3,pv,{TS}"
    row = _one_bad_row(tmp_path, line, "missing_item_id")
    assert row["raw"] == line
    assert row["user_id"] == "1"


def test_ten_thousand_character_id_is_too_long(tmp_path: Path) -> None:
    line = "x" * 10_000 + f",2,3,pv,{TS}"
    row = _one_bad_row(tmp_path, line, "id_too_long")
    assert row["raw"] == line
    assert "10000" in row["detail"]


def test_id_length_counts_utf8_bytes(tmp_path: Path) -> None:
    # 100 characters, 300 bytes of UTF-8: over the default limit of 256 bytes.
    line = "用" * 100 + f",2,3,pv,{TS}"
    row = _one_bad_row(tmp_path, line, "id_too_long")
    assert row["raw"] == line


def test_sql_injection_looking_id_loads_as_plain_text(tmp_path: Path) -> None:
    hostile = "1'); DROP TABLE events; --"
    path = _write(tmp_path / "log.csv", _lines([*GOOD_TAOBAO, f"{hostile},2,3,pv,{TS}"]))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.loaded, summary.quarantined) == (len(GOOD_TAOBAO) + 1, 0)
        users = set(store.events(["user_id"]).column("user_id").to_pylist())
        assert hostile in users
        assert store.con.execute("SELECT count(*) FROM events").fetchone()[0] == summary.loaded


def test_unicode_ids_load_unchanged(tmp_path: Path) -> None:
    rows = [
        ("用户✓", "商品é", "猫"),
        ("Ürsula", "İtem", "ß"),
        ("مستخدم", "עברית", "ελληνικά"),
        ("emoji🙂👍🏽", "e\u0301", "x y"),  # combining accent and an inner space kept
    ]
    lines = [f"{u},{i},{c},buy,{TS}" for u, i, c in rows]
    path = _write(tmp_path / "log.csv", _lines([*GOOD_TAOBAO, *lines]))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.loaded, summary.quarantined) == (len(GOOD_TAOBAO) + len(rows), 0)
        events = store.events(["user_id", "item_id", "category_id"]).to_pylist()
        stored = {(e["user_id"], e["item_id"], e["category_id"]) for e in events}
    assert set(rows) <= stored


# -- bad rows: layout -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "line",
    ["1,2,3,pv", f"1,2,3,pv,{TS},extra", "just-one-field", f"1,2,3,pv,{TS},x,y,z"],
    ids=["too-few", "too-many", "one-field", "far-too-many"],
)
def test_wrong_field_count(tmp_path: Path, line: str) -> None:
    row = _one_bad_row(tmp_path, line, "wrong_field_count")
    assert row["raw"] == line
    assert row["line"] == len(GOOD_TAOBAO) // 2 + 1  # physical line number, 1-based


def test_invalid_utf8_bytes_are_bad_encoding(tmp_path: Path) -> None:
    row = _one_bad_row(tmp_path, b"1,2\xff\xfe,3,pv,1511539200", "bad_encoding")
    # The raw text cannot hold invalid bytes; the rest of the line is kept around them.
    assert row["raw"].startswith("1,2")
    assert row["raw"].endswith(",3,pv,1511539200")


def test_unclosed_quote_in_unquoted_format_swallows_nothing(tmp_path: Path) -> None:
    # Taobao never quotes: a stray quote is an ordinary character and the lines after it load.
    lines = [*GOOD_TAOBAO[:5], f'"9,2,3,pv,{TS}', *GOOD_TAOBAO[5:]]
    path = _write(tmp_path / "log.csv", _lines(lines))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert summary.rows_read == len(lines)
        assert summary.loaded == len(lines)
        assert '"9' in store.events(["user_id"]).column("user_id").to_pylist()


def test_stray_quote_in_a_never_quoted_format_stays_in_its_row(tmp_path: Path) -> None:
    # REES46 exports never quote, so a stray quote is an ordinary character of its field
    # and cannot swallow the rows after it.
    bad = '2019-10-01 00:00:00 UTC,view,"1,2,,b,1.0,5,s'
    good = [
        f"2019-10-01 00:{i // 60:02d}:{i % 60:02d} UTC,view,{4400 + i},21038,,brand,1.50,"
        f"{541312140 + i},sess-{i}"
        for i in range(30)
    ]
    path = _write(tmp_path / "log.csv", _lines([REES46_HEADER, *good[:5], bad, *good[5:]]))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path, "rees46")
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded) == (len(good) + 1, len(good) + 1)
        items = {row["item_id"] for row in store.events(["item_id"]).to_pylist()}
    assert '"1' in items


def test_unclosed_quote_in_quoted_csv_refuses_the_file(
    loaded_store: EventStore, tmp_path: Path
) -> None:
    # Generic CSV honours quotes; an unclosed one makes the following lines unreadable, so
    # the file is refused as a whole, with the line to fix, rather than half-loaded.
    rows = [f"u{i},i{i},view,2024-01-01 00:00:{i:02d}" for i in range(20)]
    rows[6] = 'u6,"i6,view,2024-01-01 00:00:06'
    path = _write(tmp_path / "log.csv", _lines(["user,item,action,when", *rows]))
    mapping = ColumnMapping(
        user_col="user", item_col="item", behavior_col="action", time_col="when"
    )
    before = _snapshot(loaded_store)
    with pytest.raises(
        InputFormatError, match=r"line 8: a quote opened on this line is never closed"
    ):
        ingest_file(loaded_store, path, "generic", mapping=mapping, now=NOW)
    assert _snapshot(loaded_store) == before
    unquoted = ColumnMapping(
        user_col="user", item_col="item", behavior_col="action", time_col="when", quote=""
    )
    summary = ingest_file(loaded_store, path, "generic", mapping=unquoted, now=NOW)
    assert (summary.rows_read, summary.loaded) == (20, 20)


@pytest.mark.parametrize("cut", ["7,8,9,p", "7,8", "7"], ids=["mid-time", "mid-row", "one-byte"])
def test_truncated_last_line(tmp_path: Path, cut: str) -> None:
    path = _write(tmp_path / "log.csv", _lines(GOOD_TAOBAO) + cut)  # no trailing newline
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded, summary.quarantined) == (
            len(GOOD_TAOBAO) + 1,
            len(GOOD_TAOBAO),
            1,
        )
        assert summary.reasons == {"wrong_field_count": 1}
        (row,) = _quarantine(store)
    assert row["raw"] == cut
    assert row["line"] == len(GOOD_TAOBAO) + 1


def test_truncated_last_line_with_valid_field_count(tmp_path: Path) -> None:
    # Cut inside the time stamp: five fields, but the time is now in 1974.
    path = _write(tmp_path / "log.csv", _lines(GOOD_TAOBAO) + "7,8,9,pv,151153")
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert summary.reasons == {"time_out_of_range": 1}


def _big_taobao() -> bytes:
    """Enough rows that the first 64 KiB (the format check) do not reach the end."""
    rows = [f"{u},{i},{i % 50},pv,{TS + i}" for u in range(40) for i in range(250)]
    return _lines(rows).encode("ascii")


@pytest.mark.parametrize("keep", [0.5, 0.02], ids=["cut-after-check", "cut-within-check"])
def test_truncated_gzip_fails_cleanly(loaded_store: EventStore, tmp_path: Path, keep: float):
    data = gzip.compress(_big_taobao())
    path = _write(tmp_path / "log.csv.gz", data[: int(len(data) * keep)])
    before = _snapshot(loaded_store)
    with pytest.raises(EbbtideError) as caught:
        _ingest(loaded_store, path)
    assert _snapshot(loaded_store) == before
    assert str(path) in str(caught.value)


def test_whole_gzip_loads(tmp_path: Path) -> None:
    raw = _big_taobao()
    path = _write(tmp_path / "log.csv.gz", gzip.compress(raw))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert summary.loaded == raw.count(b"\n")


def test_every_kind_of_bad_row_in_one_file(tmp_path: Path) -> None:
    bad = {
        "bad_time": "1,2,3,pv,abc",
        "time_out_of_range": "1,2,3,pv,0",
        "unknown_behavior": f"1,2,3,click,{TS}",
        "missing_user_id": f",2,3,pv,{TS}",
        "missing_item_id": f"1,,3,pv,{TS}",
        "id_too_long": "u" * 300 + f",2,3,pv,{TS}",
        "wrong_field_count": "1,2,3",
    }
    lines = [*GOOD_TAOBAO, *GOOD_TAOBAO[:3], *bad.values()]  # three exact duplicates
    path = _write(tmp_path / "log.csv", _lines(lines))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded, summary.duplicates, summary.quarantined) == (
            len(lines),
            len(GOOD_TAOBAO),
            3,
            len(bad),
        )
        assert summary.reasons == dict.fromkeys(bad, 1)
        raw_by_reason = {row["reason"]: row["raw"] for row in _quarantine(store)}
    assert raw_by_reason == bad


# -- line endings and byte-order marks ---------------------------------------------------
@pytest.mark.parametrize(
    "newlines",
    [
        ["\r\n"] * 10,  # Windows throughout
        ["\n"] * 4 + ["\r\n"] + ["\n"] * 5,  # one stray CR (a row edited on Windows)
        ["\r\n"] * 4 + ["\n"] + ["\r\n"] * 5,  # one bare LF in a Windows file
        ["\r\n"] * 9 + ["\r\n\n"],  # Windows file ending with an extra blank LF line
    ],
    ids=["crlf", "lf-with-one-crlf", "crlf-with-one-lf", "crlf-then-blank-lf"],
)
def test_line_endings_do_not_matter(tmp_path: Path, newlines: list[str]) -> None:
    text = "".join(line + end for line, end in zip(GOOD_TAOBAO, newlines, strict=True))
    path = _write(tmp_path / "log.csv", text)
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded) == (len(GOOD_TAOBAO), len(GOOD_TAOBAO))


def test_old_mac_cr_line_endings(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "".join(line + "\r" for line in GOOD_TAOBAO))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded) == (len(GOOD_TAOBAO), len(GOOD_TAOBAO))


def test_utf8_bom_before_taobao_rows(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", b"\xef\xbb\xbf" + _lines(GOOD_TAOBAO).encode())
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert summary.loaded == len(GOOD_TAOBAO)
        assert "1" in store.events(["user_id"]).column("user_id").to_pylist()  # no BOM kept


def test_utf8_bom_before_rees46_header(tmp_path: Path) -> None:
    # Spreadsheet programs save UTF-8 CSV with a byte-order mark: the header is still right.
    data = b"\xef\xbb\xbf" + _lines([REES46_HEADER, *GOOD_REES46]).encode()
    path = _write(tmp_path / "rees.csv", data)
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path, "rees46")
        _assert_reconciled(store, summary)
        assert summary.loaded == len(GOOD_REES46)


# -- bad rows: prices -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("price", "reason"),
    [("-1.0", "negative_price"), ("abc", "bad_price"), ("nan", "bad_price"), ("inf", "bad_price")],
)
def test_rees46_bad_price(tmp_path: Path, price: str, reason: str) -> None:
    line = f"2019-10-01 00:00:00 UTC,view,1,2,,b,{price},5,s"
    row = _one_bad_row(tmp_path, line, reason, fmt="rees46", good=GOOD_REES46, header=REES46_HEADER)
    assert row["raw"] == line
    assert row["price"] == price


@pytest.mark.parametrize(("price", "reason"), [("-3", "negative_price"), ("abc", "bad_price")])
def test_generic_csv_bad_price(tmp_path: Path, price: str, reason: str) -> None:
    good = [f"u{i},i{i},view,{TS},{i}.5" for i in range(6)]
    line = f"u1,i1,view,{TS},{price}"
    row = _one_bad_row(
        tmp_path,
        line,
        reason,
        fmt="generic",
        good=good,
        header="user,item,behavior,ts,price",
        mapping=GENERIC,
    )
    assert row["raw"] == line


# -- bad rows: generic JSON Lines and Parquet -------------------------------------------
def _jsonl_rows(n: int) -> list[str]:
    return [
        json.dumps({"user": f"u{i}", "item": f"i{i}", "behavior": "view", "ts": TS + i})
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1, 2]", "malformed_json"),
        ('"a string"', "malformed_json"),
        ('{"user": "u9", "item": "i9", "behavior": "view", "ts": "abc"}', "bad_time"),
        ('{"user": "", "item": "i9", "behavior": "view", "ts": 1511539200}', "missing_user_id"),
        ('{"user": "u9", "behavior": "view", "ts": 1511539200}', "missing_item_id"),
        ('{"user": "u9", "item": "i9", "behavior": "hover", "ts": 1511539200}', "unknown_behavior"),
    ],
    ids=["array", "string", "bad-time", "empty-user", "no-item", "unknown-behaviour"],
)
def test_jsonl_bad_record(tmp_path: Path, line: str, reason: str) -> None:
    row = _one_bad_row(tmp_path, line, reason, fmt="generic", good=_jsonl_rows(6), mapping=JSONL)
    assert row["raw"] == line


@pytest.mark.parametrize(
    "garbled",
    [
        '{"user": "u1", "item": ',
        "not json at all",
        "{'user': 'u1', 'item': 'i1', 'behavior': 'view', 'ts': 1511539200}",
    ],
    ids=["cut-object", "plain-text", "single-quotes"],
)
def test_jsonl_garbled_line_is_malformed_json(tmp_path: Path, garbled: str) -> None:
    row = _one_bad_row(
        tmp_path, garbled, "malformed_json", fmt="generic", good=_jsonl_rows(6), mapping=JSONL
    )
    assert row["raw"] == garbled


def test_jsonl_garbled_line_after_the_format_check(tmp_path: Path) -> None:
    # Past the first 200 lines the format check does not see it: the load itself must cope.
    good = _jsonl_rows(300)
    path = _write(tmp_path / "log.jsonl", _lines([*good, '{"user": "u1", "item": ', *good[:2]]))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path, "generic", mapping=JSONL)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded, summary.duplicates) == (303, 300, 2)
        assert summary.reasons == {"malformed_json": 1}


def test_parquet_mistyped_price_column(tmp_path: Path) -> None:
    prices = ["1.5", "abc", "-2", "2", "3", "inf", None]
    table = pa.table(
        {
            "user": [f"u{i}" for i in range(len(prices))],
            "item": [f"i{i}" for i in range(len(prices))],
            "behavior": ["view"] * len(prices),
            "ts": [TS + i for i in range(len(prices))],
            "price": pa.array(prices, pa.string()),
        }
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path, "generic", mapping=GENERIC)
        _assert_reconciled(store, summary)
        assert (summary.rows_read, summary.loaded, summary.quarantined) == (7, 4, 3)
        assert summary.reasons == {"bad_price": 2, "negative_price": 1}
        rows = _quarantine(store)
        events = store.events(["user_id", "price"]).to_pylist()
    assert {r["user_id"]: r["reason"] for r in rows} == {
        "u1": "bad_price",
        "u2": "negative_price",
        "u5": "bad_price",
    }
    assert all(json.loads(r["raw"])["price"] == r["price"] for r in rows)
    assert {e["user_id"]: e["price"] for e in events} == {
        "u0": 1.5,
        "u3": 2.0,
        "u4": 3.0,
        "u6": None,
    }


# -- bad files -------------------------------------------------------------------------------
def _rees46_text(n: int = 20) -> str:
    return _lines([REES46_HEADER, *GOOD_REES46[:n]])


def test_rees46_file_given_as_taobao(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "rees.csv", _rees46_text())
    message = _refused(loaded_store, path, "taobao")
    assert TAOBAO_COLUMNS in message
    assert REES46_HEADER in message  # the first offending line


def test_taobao_file_given_as_rees46(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "taobao.csv", _lines(GOOD_TAOBAO))
    message = _refused(loaded_store, path, "rees46")
    assert REES46_HEADER in message
    assert GOOD_TAOBAO[0] in message


@pytest.mark.parametrize(
    "header",
    [
        "a,b,c,d,e,f,g,h,i",
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id",
        "user_id,user_session,event_time,event_type,product_id,category_id,category_code,brand,price",
    ],
    ids=["nonsense", "column-missing", "columns-reordered"],
)
def test_rees46_wrong_header(loaded_store: EventStore, tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "rees.csv", _lines([header, *GOOD_REES46]))
    message = _refused(loaded_store, path, "rees46")
    assert REES46_HEADER in message
    assert header in message


def test_rees46_without_header(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "rees.csv", _lines(GOOD_REES46))
    message = _refused(loaded_store, path, "rees46")
    assert REES46_HEADER in message
    assert GOOD_REES46[0] in message


@pytest.mark.parametrize(
    "header", ["time,visitor,event,item,tx", REES46_HEADER], ids=["renamed", "rees46"]
)
def test_retailrocket_wrong_header(loaded_store: EventStore, tmp_path: Path, header: str) -> None:
    path = _write(tmp_path / "events.csv", _lines([header, "1433221332117,257597,view,355908,"]))
    message = _refused(loaded_store, path, "retailrocket")
    assert ",".join(RETAILROCKET.columns) in message  # type: ignore[arg-type]
    assert header in message


def test_header_only_file(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "rees.csv", REES46_HEADER + "\n")
    message = _refused(loaded_store, path, "rees46")
    assert REES46_HEADER in message


def test_binary_garbage_with_nul_bytes(loaded_store: EventStore, tmp_path: Path) -> None:
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(4096)) + b"\x00" * 16
    path = _write(tmp_path / "garbage.csv", garbage)
    message = _refused(loaded_store, path, "taobao")
    assert TAOBAO_COLUMNS in message
    assert "binary" in message.lower()


def test_binary_garbage_without_nul_bytes(loaded_store: EventStore, tmp_path: Path) -> None:
    rng = random.Random(11)
    alphabet = [b for b in range(1, 256) if b not in (10, 13)]
    path = _write(tmp_path / "garbage.csv", bytes(rng.choice(alphabet) for _ in range(4096)))
    message = _refused(loaded_store, path, "taobao")
    assert TAOBAO_COLUMNS in message


def test_gzip_of_binary_garbage(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "garbage.csv.gz", gzip.compress(bytes(range(256)) * 8))
    message = _refused(loaded_store, path, "taobao")
    assert TAOBAO_COLUMNS in message


@pytest.mark.parametrize("content", [b"", b"   \n\t\n\n  \r\n"], ids=["empty", "whitespace-only"])
@pytest.mark.parametrize("fmt", ["taobao", "rees46"])
def test_empty_file(loaded_store: EventStore, tmp_path: Path, content: bytes, fmt: str) -> None:
    path = _write(tmp_path / "empty.csv", content)
    message = _refused(loaded_store, path, fmt)
    assert "empty" in message
    assert (TAOBAO_COLUMNS if fmt == "taobao" else REES46_HEADER) in message


def test_empty_gzip_file(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.csv.gz", gzip.compress(b""))
    message = _refused(loaded_store, path, "taobao")
    assert "empty" in message


def test_nonexistent_path(loaded_store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "no" / "such.csv"
    message = _refused(loaded_store, path, "taobao")
    assert str(path) in message


def test_directory_instead_of_file(loaded_store: EventStore, tmp_path: Path) -> None:
    message = _refused(loaded_store, tmp_path, "taobao")
    assert str(tmp_path) in message


def test_parquet_file_that_is_text(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "log.parquet", "user,item,behavior,ts,price\nu1,i1,view,1,2\n")
    message = _refused(loaded_store, path, "generic", mapping=GENERIC)
    assert "Parquet" in message


def test_parquet_without_mapped_columns(loaded_store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), path)
    message = _refused(loaded_store, path, "generic", mapping=GENERIC)
    for column in ("user", "item", "ts", "behavior"):
        assert column in message


def test_generic_csv_without_mapped_columns(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "a,b,c\n1,2,3\n")
    message = _refused(loaded_store, path, "generic", mapping=GENERIC)
    assert "a,b,c" in message
    for column in ("user", "item", "ts", "behavior"):
        assert column in message


def test_jsonl_without_mapped_keys(loaded_store: EventStore, tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", '{"a": 1}\n{"a": 2}\n{"a": 3}\n')
    message = _refused(loaded_store, path, "generic", mapping=JSONL)
    assert '{"a": 1}' in message
    assert "behavior,item,ts,user" in message


def test_mostly_bad_rows_is_a_wrong_format(loaded_store: EventStore, tmp_path: Path) -> None:
    # Five fields, but nothing like Taobao: most rows bad means "not this format".
    lines = [f"{i},x,y,hello,world" for i in range(10)]
    path = _write(tmp_path / "log.csv", _lines(lines))
    message = _refused(loaded_store, path, "taobao")
    assert TAOBAO_COLUMNS in message
    assert lines[0] in message


# -- the command line ---------------------------------------------------------------------
def test_cli_wrong_format_is_one_error_line(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "rees.csv", _rees46_text())
    db = tmp_path / "cli.duckdb"
    result = cli("ingest", str(path), "--format", "taobao", "--db", str(db), "--quiet")
    assert result.exit_code == 1, result.output
    assert "Error:" in result.stderr
    assert "Error:" not in result.stdout
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert "user_id,item_id,category_id,behavior_type,timestamp" in " ".join(result.stderr.split())


def test_cli_missing_file_is_one_error_line(cli, tmp_path: Path) -> None:
    db = tmp_path / "cli.duckdb"
    missing = tmp_path / "missing.csv"
    result = cli("ingest", str(missing), "--db", str(db), "--quiet")
    assert result.exit_code == 1, result.output
    assert "Error:" in result.stderr
    assert "Traceback" not in result.output


def test_cli_garbled_jsonl_line_is_quarantined_not_a_crash(cli, tmp_path: Path) -> None:
    path = _write(tmp_path / "log.jsonl", _lines([*_jsonl_rows(6), "not json at all"]))
    db = tmp_path / "cli.duckdb"
    args = ["ingest", str(path), "--format", "generic", "--db", str(db), "--quiet"]
    args += ["--user-col", "user", "--item-col", "item", "--time-col", "ts"]
    args += ["--behavior-col", "behavior", "--time-format", "epoch_s"]
    result = cli(*args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 0, result.output
    with EventStore(db, read_only=True) as store:
        assert store.stats().quarantined == {"malformed_json": 1}


def test_mixed_line_endings_past_the_first_bytes_get_a_clear_error(
    loaded_store: EventStore, tmp_path: Path
) -> None:
    rows = [f"{i},{i},1,pv,{1_511_544_070 + i}" for i in range(5_000)]  # ~120 KiB of LF
    path = _write(tmp_path / "log.csv", "\n".join(rows) + "\n9,9,9,pv,1511544070\r\n")
    before = _snapshot(loaded_store)
    with pytest.raises(InputFormatError, match="end in more than one way"):
        _ingest(loaded_store, path)
    assert _snapshot(loaded_store) == before


def test_rejected_row_of_a_crlf_file_keeps_exactly_its_own_text(tmp_path: Path) -> None:
    # DuckDB reports such a row with the previous line's LF in front; it must not be
    # mistaken for a record spanning lines (which would refuse the whole file).
    rows = [*GOOD_TAOBAO[:3], "0,0,1,pv", *GOOD_TAOBAO[3:]]
    path = _write(tmp_path / "log.csv", "".join(f"{row}\r\n" for row in rows))
    with EventStore(tmp_path / "s.duckdb") as store:
        summary = _ingest(store, path)
        _assert_reconciled(store, summary)
        assert summary.reasons == {"wrong_field_count": 1}
        (row,) = _quarantine(store)
    assert (row["raw"], row["line"]) == ("0,0,1,pv", 4)
