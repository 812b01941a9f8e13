"""The event store: idempotent, exact de-duplication, atomic loads, privacy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ebbtide.datasets import taobao_sample_path
from ebbtide.errors import ConfigError, PrivacyError, StoreError
from ebbtide.ingest import Pseudonymiser, ingest_file
from ebbtide.store import EventStore, Period, check_time_zone
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

ROWS = "1,10,100,pv,1511544070\n1,11,100,cart,1511544080\n2,10,100,buy,1511544090\n"


def _snapshot(store: EventStore) -> tuple:
    """Everything a load may change, in a comparable form."""
    con = store.con
    return tuple(
        con.execute(f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM {table} t").fetchone()
        for table in ("events", "users", "items", "categories", "quarantine", "ingests")
    )


def test_same_file_twice_changes_nothing(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS + "3,12,100,teleport,1511544099\n")
    first = ingest_file(store, path, "taobao")
    before = _snapshot(store)
    second = ingest_file(store, path, "taobao")
    assert _snapshot(store) == before
    assert second.already_ingested and second.loaded == 0
    assert (second.rows_read, second.duplicates, second.quarantined) == (4, 3, 1)
    assert first.reasons == second.reasons == {"unknown_behavior": 1}


def test_overlapping_files_load_each_event_once(store: EventStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(ROWS)
    b.write_text("2,10,100,buy,1511544090\n2,10,100,buy,1511544090\n4,13,101,fav,1511544100\n")
    ingest_file(store, a, "taobao")
    summary = ingest_file(store, b, "taobao")
    assert (summary.rows_read, summary.loaded, summary.duplicates) == (3, 1, 2)
    assert store.stats().events == 4


def test_ids_are_dense_and_stable_across_loads(store: EventStore, tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(ROWS)
    b.write_text("0,9,99,pv,1511544070\n")
    ingest_file(store, a, "taobao")
    users_before = dict(store.con.execute("SELECT user_id, user_idx FROM users").fetchall())
    ingest_file(store, b, "taobao")
    users = dict(store.con.execute("SELECT user_id, user_idx FROM users").fetchall())
    assert users_before == {"1": 0, "2": 1}
    assert users == {"1": 0, "2": 1, "0": 2}  # new ids are appended, old ones never move
    for table, column in (
        ("users", "user_idx"),
        ("items", "item_idx"),
        ("categories", "category_idx"),
    ):
        n, lo, hi = store.con.execute(
            f"SELECT count(*), min({column}), max({column}) FROM {table}"
        ).fetchone()
        assert (lo, hi) == (0, n - 1)


def test_same_input_gives_the_same_store(tmp_path: Path) -> None:
    contents = []
    for name in ("one", "two"):
        with EventStore(tmp_path / f"{name}.duckdb") as store:
            ingest_file(store, taobao_sample_path(), "taobao")
            contents.append(
                store.con.execute(
                    "SELECT sum(hash(user_idx, item_idx, category_idx, ts)) FROM events"
                ).fetchone()
            )
    assert contents[0] == contents[1]


def test_not_an_ebbtide_store(tmp_path: Path) -> None:
    junk = tmp_path / "junk.duckdb"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not an ebbtide store"):
        EventStore(junk)


def test_store_in_use_by_another_process_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "locked.duckdb"
    EventStore(db).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, time; c = duckdb.connect({str(db)!r});"
            " print('ready', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreError, match="in use"):
            EventStore(db)
    finally:
        holder.kill()
        holder.wait()


# -- kill -9 in the middle of a load ------------------------------------------------
_LOADER = textwrap.dedent(
    """
    import sys
    from ebbtide.store import EventStore
    from ebbtide.ingest import ingest_file

    def report(stage):
        print(stage, flush=True)

    with EventStore(sys.argv[1]) as store:
        ingest_file(store, sys.argv[2], "taobao", progress=report)
    print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.csv"
    write_taobao_csv(generate(SynthConfig(users=8_000, days=9, seed=7)), path)
    return path


@pytest.mark.parametrize(
    "stage", ["reading and checking rows", "removing duplicates and writing events"]
)
def test_kill_during_ingest_leaves_store_as_before(
    tmp_path: Path, big_log: Path, stage: str
) -> None:
    db = tmp_path / "store.duckdb"
    with EventStore(db) as store:
        ingest_file(store, taobao_sample_path(), "taobao")
        before = _snapshot(store)
    loader = subprocess.Popen(
        [sys.executable, "-c", _LOADER, str(db), str(big_log)], stdout=subprocess.PIPE, text=True
    )
    seen = []
    for line in loader.stdout:
        seen.append(line.strip())
        if line.strip() == stage:
            os.kill(loader.pid, signal.SIGKILL)
            break
    loader.wait()
    assert loader.returncode == -signal.SIGKILL, f"loader ended before the kill: {seen}"
    with EventStore(db) as store:
        assert _snapshot(store) == before
        rerun = ingest_file(store, big_log, "taobao")
        assert rerun.loaded > 700_000 and not rerun.already_ingested
        assert store.stats().events == 84_475 + rerun.loaded


# -- privacy ------------------------------------------------------------------------
KEY = b"k" * 32


def test_pseudonymised_store_holds_no_raw_ids(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS + "secret-user,10,100,teleport,1511544070\nsecret-user,10\n")
    p = Pseudonymiser(KEY)
    summary = ingest_file(store, path, "taobao", pseudonymiser=p)
    assert summary.loaded == 3 and summary.quarantined == 2
    users = {r[0] for r in store.con.execute("SELECT user_id FROM users").fetchall()}
    assert users == {p("1"), p("2")}
    dump = str(store.con.execute("SELECT * FROM quarantine").fetchall())
    assert "secret-user" not in dump and p("secret-user") in dump
    assert store.pseudonymised is True


def test_pseudonymised_and_raw_ids_never_mix(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS)
    ingest_file(store, path, "taobao", pseudonymiser=Pseudonymiser(KEY))
    other = tmp_path / "b.csv"
    other.write_text("9,9,9,pv,1511544070\n")
    before = _snapshot(store)
    with pytest.raises(PrivacyError, match="refuses raw ids"):
        ingest_file(store, other, "taobao")
    with pytest.raises(PrivacyError, match="another key"):
        ingest_file(store, other, "taobao", pseudonymiser=Pseudonymiser(b"x" * 32))
    assert _snapshot(store) == before


def test_raw_store_refuses_pseudonymised_ids(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS)
    ingest_file(store, path, "taobao")
    other = tmp_path / "b.csv"
    other.write_text("9,9,9,pv,1511544070\n")
    with pytest.raises(PrivacyError, match="raw user ids"):
        ingest_file(store, other, "taobao", pseudonymiser=Pseudonymiser(KEY))


def test_short_key_and_missing_key_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PrivacyError, match="at least 16"):
        Pseudonymiser(b"short")
    monkeypatch.delenv("EBBTIDE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(PrivacyError, match="EBBTIDE_PSEUDONYM_KEY"):
        Pseudonymiser.from_env_or_file()


def test_forget_removes_events_quarantine_and_id(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS + "1,10,100,teleport,1511544070\n1,10\n2,10,100,teleport,1511544070\n")
    ingest_file(store, path, "taobao")
    report = store.forget("1")
    assert (report.events, report.quarantined_rows, report.user_entry) == (2, 2, True)
    assert store.con.execute("SELECT count(*) FROM users WHERE user_id = '1'").fetchone()[0] == 0
    left = store.quarantine().to_pylist()
    assert [row["user_id"] for row in left] == ["2"]  # the other user's row stays
    assert store.stats().events == 1
    assert store.forget("1").events == 0


def test_forget_in_pseudonymised_store(store: EventStore, tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text(ROWS)
    p = Pseudonymiser(KEY)
    ingest_file(store, path, "taobao", pseudonymiser=p)
    with pytest.raises(PrivacyError, match="pass the key"):
        store.require_pseudonym("1", None)
    report = store.forget(store.require_pseudonym("1", p))
    assert report.events == 2


def test_load_is_fast_enough_to_be_usable(store: EventStore) -> None:
    # Not a benchmark (see bench/ingest.py): a guard against accidental per-row Python.
    started = time.perf_counter()
    ingest_file(store, taobao_sample_path(), "taobao")
    assert time.perf_counter() - started < 30


def test_unknown_time_zone_is_refused_with_what_to_use(store: EventStore) -> None:
    with pytest.raises(ConfigError, match=r"unknown time zone 'Mars/Olympus'.*Europe/Berlin"):
        store.stats(tz="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"did you mean Europe/Berlin\?"):
        check_time_zone("Europe/Berln")
    assert check_time_zone("Asia/Shanghai") == "Asia/Shanghai"
    assert store.stats(tz="Europe/Berlin").timezone == "Europe/Berlin"


def _daily_log(path: Path, start: datetime, days: int) -> Path:
    """One purchase a day at 12:00 UTC (user = the day's weekday), Taobao layout."""
    stamps = (start + timedelta(days=d, hours=12) for d in range(days))
    path.write_text("".join(f"{t.weekday()},1,1,buy,{int(t.timestamp())}\n" for t in stamps))
    return path


@pytest.mark.parametrize(
    ("days", "period", "rows"),
    [(9, "day", 9), (60, "day", 60), (364, "week", 52), (545, "month", 18)],
)
def test_stats_fold_long_logs_into_weeks_or_months(
    store: EventStore, tmp_path: Path, days: int, period: str, rows: int
) -> None:
    ingest_file(
        store, _daily_log(tmp_path / "log.csv", datetime(2024, 1, 1, tzinfo=UTC), days), "taobao"
    )
    stats = store.stats()
    assert (stats.period, stats.period_chosen, len(stats.events_per_period)) == (period, True, rows)
    assert sum(n for _, n in stats.events_per_period) == stats.events == days
    assert stats.to_dict()["events_per_period"] == stats.events_per_period
    forced = store.stats(per="day")
    assert (forced.period, forced.period_chosen, len(forced.events_per_period)) == (
        "day",
        False,
        days,
    )


def test_event_counts_label_weeks_by_monday_and_months_by_year_month(
    store: EventStore, tmp_path: Path
) -> None:
    ingest_file(
        store, _daily_log(tmp_path / "log.csv", datetime(2024, 1, 1, tzinfo=UTC), 40), "taobao"
    )
    weeks = store.event_counts("week")
    assert weeks[:2] == [("2024-01-01", 7), ("2024-01-08", 7)] and weeks[-1] == ("2024-02-05", 5)
    assert all(date.fromisoformat(w).weekday() == 0 for w, _ in weeks)
    assert store.event_counts(Period.MONTH) == [("2024-01", 31), ("2024-02", 9)]
    with pytest.raises(ConfigError, match="unknown period 'year'; use one of day, week, month"):
        store.event_counts("year")


def test_periods_begin_in_the_asked_time_zone(store: EventStore, tmp_path: Path) -> None:
    # Sunday 2024-03-31 20:00 UTC is Monday 04:00 in Shanghai: another week and month there.
    path = tmp_path / "log.csv"
    path.write_text(f"1,1,1,buy,{int(datetime(2024, 3, 31, 20, tzinfo=UTC).timestamp())}\n")
    ingest_file(store, path, "taobao")
    assert store.event_counts("week") == [("2024-03-25", 1)]
    assert store.event_counts("week", tz="Asia/Shanghai") == [("2024-04-01", 1)]
    assert store.event_counts("month", tz="Asia/Shanghai") == [("2024-04", 1)]
    assert store.event_counts("day", tz="America/New_York") == [("2024-03-31", 1)]


def test_a_few_stray_early_events_do_not_fold_a_short_log(
    store: EventStore, tmp_path: Path
) -> None:
    log = _daily_log(tmp_path / "log.csv", datetime(2024, 6, 3, tzinfo=UTC), 9)
    stray = int(datetime(2023, 9, 11, 8, tzinfo=UTC).timestamp())
    log.write_text(log.read_text() + f"9,1,1,buy,{stray}\n")
    assert ingest_file(store, log, "taobao").loaded == 10
    stats = store.stats()
    assert (stats.period, stats.days_with_events) == ("day", 10)
    assert stats.events_per_period[0] == ("2023-09-11", 1)
