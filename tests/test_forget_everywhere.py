"""`forget` reaches the store, every saved model and what is written afterwards; `retain`.

The issue's test: after `ebbtide forget USER`, no file or table the project writes holds
the user's id (or, in a pseudonymised store, its pseudonym). Files are read as tables
(Parquet, CSV, JSON, npz, DuckDB) and scanned as raw bytes in the encodings they may hold
strings in (numpy keeps them as UTF-32).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from ebbtide.features.history import FORGOTTEN, snapshot
from ebbtide.ingest import ingest_file
from ebbtide.ingest.pseudonymise import KEY_ENV, Pseudonymiser
from ebbtide.models.base import Model, forget_in_saved_model
from ebbtide.models.decay import DecayModel
from ebbtide.store import EventStore

#: An id no synthetic or sample log can hold by accident.
USER = "zz-forget-me-7731"
AT = "2017-12-01T00:00:00"


def _log(cli, folder: Path) -> Path:
    """A small synthetic log plus USER: a copy of user 1's events and one refused row."""
    log = folder / "log.csv"
    cli.ok("synth", "--users", "40", "--days", "6", "--out", str(log), "--quiet")
    rows = log.read_text().splitlines()
    mine = [USER + row[row.index(",") :] for row in rows if row.startswith("1,")][:40]
    bad = f"{USER},1,1,teleport,1511600000"
    log.write_text("\n".join([*rows, *mine, bad]) + "\n")
    return log


def _needles(*ids: str) -> list[bytes]:
    return [i.encode(codec) for i in ids for codec in ("utf-8", "utf-16-le", "utf-32-le")]


def _strings_in(path: Path) -> list[str]:
    """The string values of a table file, read as its format says."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        return [str(v) for column in table.columns for v in column.to_pylist()]
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return [str(v) for name in data.files for v in np.asarray(data[name]).ravel()]
    if suffix == ".duckdb":
        con = duckdb.connect(str(path), read_only=True)
        try:
            values = []
            for table, column in con.execute(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE data_type = 'VARCHAR'"
            ).fetchall():
                values += [
                    r[0] for r in con.execute(f'SELECT "{column}" FROM "{table}"').fetchall()
                ]
            return [v for v in values if v is not None]
        finally:
            con.close()
    if suffix == ".json":  # one document, or JSON lines
        text = path.read_text()
        try:
            return [json.dumps(json.loads(text))]
        except json.JSONDecodeError:
            return [json.dumps(json.loads(line)) for line in text.splitlines() if line.strip()]
    if suffix == ".csv":
        return path.read_text().split(",")
    return []


def _holders(roots: list[Path], ids: tuple[str, ...]) -> list[str]:
    """Every file under `roots` whose tables or raw bytes hold one of `ids`."""
    needles = _needles(*ids)
    found = []
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if not path.is_file():
                continue
            raw = path.read_bytes()
            if any(n in raw for n in needles) or any(
                i in value for value in _strings_in(path) for i in ids
            ):
                found.append(str(path))
    return found


def _outputs(cli, db: Path, models: Path, folder: Path) -> None:
    """Every output the commands write: scores of three families, segments, a plan."""
    folder.mkdir()
    for family, out in (("decay", "scores.parquet"), ("btyd", "btyd.json")):
        cli.ok("score", "--model-dir", str(models / family), "--at", AT, "--db", str(db),
               "--out", str(folder / out))  # fmt: skip
    cli.ok("score", "--model-dir", str(models / "neural"), "--at", AT, "--db", str(db),
           "--out", str(folder / "neural.csv"), "--runtime", "onnx")  # fmt: skip
    cli.ok("segments", "--model-dir", str(models / "decay"), "--at", AT, "--db", str(db),
           "--out", str(folder / "segments.csv"))  # fmt: skip
    cli.ok("plan", "--model-dir", str(models / "decay"), "--at", AT, "--db", str(db),
           "--out", str(folder / "plan.csv"))  # fmt: skip


@pytest.mark.filterwarnings("ignore::ebbtide.errors.ConvergenceWarning")  # a tiny log for btyd
def test_after_forget_nothing_written_holds_the_user(cli, tmp_path: Path) -> None:
    db, models = tmp_path / "store.duckdb", tmp_path / "models"
    cli.ok("ingest", str(_log(cli, tmp_path)), "--db", str(db), "--quiet")
    for family, *settings in (
        ("decay",),
        ("btyd", "--penalizer", "0.001"),
        ("neural", "--max-seconds", "2"),
    ):
        cli.ok("train", "--model", family, "--out-dir", str(models / family), "--db", str(db),
               *settings, "--quiet")  # fmt: skip
    _outputs(cli, db, models, tmp_path / "before")
    assert len(_holders([tmp_path / "before", models, db], (USER,))) >= 5  # the scan sees it

    result = cli.ok("forget", USER, "--db", str(db))
    assert "40 events, 1 quarantined rows" in result.stdout
    for family in ("decay", "btyd", "neural"):
        assert str((models / family).resolve()) in result.stdout
    assert "delete them or write them again" in result.stdout

    _outputs(cli, db, models, tmp_path / "after")
    assert _holders([tmp_path / "after", models, db], (USER,)) == []
    assert not list(tmp_path.glob("store.duckdb.*"))  # no write-ahead log or copy left


def test_forget_in_a_pseudonymised_store(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, "a key for this test only, long enough to be one")
    pseudonym = Pseudonymiser.from_env_or_file(None)(USER)
    db, model = tmp_path / "private.duckdb", tmp_path / "decay"
    cli.ok("ingest", str(_log(cli, tmp_path)), "--db", str(db), "--pseudonymise", "--quiet")
    cli.ok("train", "--model", "decay", "--out-dir", str(model), "--db", str(db), "--quiet")
    assert _holders([model], (pseudonym,))
    cli.ok("forget", USER, "--db", str(db))
    assert _holders([model, db], (USER, pseudonym)) == []


def test_forget_reaches_models_passed_and_says_which_are_gone(cli, tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    cli.ok("ingest", str(_log(cli, tmp_path)), "--db", str(db), "--quiet")
    cli.ok("train", "--model", "decay", "--out-dir", str(tmp_path / "moved"), "--db", str(db),
           "--quiet")  # fmt: skip
    shutil.move(tmp_path / "moved", tmp_path / "elsewhere")
    result = cli.ok("forget", USER, "--db", str(db), "--model", str(tmp_path / "elsewhere"))
    assert "gone: " + str((tmp_path / "moved").resolve()) in result.stdout
    assert "without the user: " + str((tmp_path / "elsewhere").resolve()) in result.stdout
    assert _holders([tmp_path / "elsewhere"], (USER,)) == []


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """A store of the bundled sample plus USER (a copy of a sample user's events) and a
    decay model fitted on it, saved."""
    from ebbtide.datasets import taobao_sample_path

    folder = tmp_path_factory.mktemp("fitted")
    store = EventStore(folder / "store.duckdb")
    ingest_file(store, taobao_sample_path(), "taobao")
    store.con.execute("INSERT INTO users SELECT max(user_idx) + 1, ? FROM users", [USER])
    store.con.execute(
        """INSERT INTO events SELECT (SELECT max(user_idx) FROM users), item_idx, category_idx,
            behavior, ts, price, quantity, brand, session_id, occurrence, ingest_id, query,
            value, placement
        FROM events WHERE user_idx = (SELECT min(user_idx) FROM users)"""
    )
    last = store.last_event()
    model = DecayModel().fit(store, cutoff=last - timedelta(days=1))
    history = snapshot(store, at=last + timedelta(seconds=1))
    store.close()
    return model.save(folder / "decay"), history, folder / "store.duckdb"


def test_a_forgotten_user_scores_as_a_stranger(fitted) -> None:
    model_dir, history, db = fitted
    before = Model.load(model_dir)
    forgotten = Model.load(model_dir)
    assert forgotten.forget([USER, "never-seen"]) == 1
    assert forgotten.forget([USER]) == 0  # the tombstone matches nothing, not even again
    assert USER not in set(forgotten.catalogue_.user_ids)
    assert (np.asarray(forgotten.catalogue_.user_ids) == FORGOTTEN).sum() == 1
    horizon = timedelta(days=1)
    old = before.p_return(history, horizon=horizon).set_index("user_id")["p_return"]
    new = forgotten.p_return(history, horizon=horizon).set_index("user_id")["p_return"]
    assert new.drop(USER).equals(old.drop(USER))  # nobody else moves
    # the same events under an id the model never saw: what a stranger gets
    stranger = Path(str(db) + ".stranger")
    shutil.copyfile(db, stranger)
    with EventStore(stranger) as store:
        store.con.execute("UPDATE users SET user_id = 'a-stranger' WHERE user_id = ?", [USER])
        renamed = snapshot(store, at=history.at)
    want = before.p_return(renamed, users=["a-stranger"], horizon=horizon)["p_return"].item()
    assert new[USER] == pytest.approx(want, rel=1e-12)
    assert new[USER] != pytest.approx(old[USER], rel=1e-6)  # it had learnt about them


def test_forget_in_saved_model_rewrites_only_the_weights(fitted, tmp_path: Path) -> None:
    model_dir = shutil.copytree(fitted[0], tmp_path / "decay")
    config = (model_dir / "config.json").read_bytes()
    assert forget_in_saved_model(model_dir, [USER]) == 1
    assert forget_in_saved_model(model_dir, [USER]) == 0
    assert (model_dir / "config.json").read_bytes() == config
    assert _holders([model_dir], (USER,)) == []
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "weights.npz"]
    loaded = Model.load(model_dir)
    assert loaded.pair_user_.size < Model.load(fitted[0]).pair_user_.size


# -- retain ---------------------------------------------------------------------------
def _day(d: int) -> int:
    return int(datetime(2024, 1, d, 12, tzinfo=UTC).timestamp())


def _retain_store(tmp_path: Path) -> Path:
    """Two loads: an old one (days 1-3, user 'gone' only there, one refused row) whose
    load time is set back, and a recent one (days 5-6, one refused row)."""
    db = tmp_path / "store.duckdb"
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_text(
        f"gone,1,1,pv,{_day(1)}\ngone,2,1,buy,{_day(2)}\nstays,1,1,pv,{_day(3)}\n"
        f"gone,3,1,teleport,{_day(2)}\n"
    )
    new.write_text(f"stays,2,1,pv,{_day(5)}\nnew,1,1,cart,{_day(6)}\nnew,1,1,nope,{_day(6)}\n")
    with EventStore(db) as store:
        ingest_file(store, old, "taobao")
        store.con.execute("UPDATE ingests SET finished_at = TIMESTAMPTZ '2024-01-03 00:00:00+00'")
        ingest_file(store, new, "taobao")
    return db


def _counts(db: Path) -> tuple[int, ...]:
    with EventStore(db, read_only=True) as store:
        return tuple(
            store.con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("events", "quarantine", "users")
        )


def test_retain_deletes_what_is_older_and_says_so(cli, tmp_path: Path) -> None:
    db = _retain_store(tmp_path)
    assert _counts(db) == (5, 2, 3)
    dry = cli.ok("retain", "--before", "2024-01-04", "--db", str(db), "--dry-run", "--quiet")
    assert "nothing deleted" in dry.stdout and _counts(db) == (5, 2, 3)
    report = tmp_path / "retain.json"
    cli.ok("retain", "--before", "2024-01-04", "--db", str(db), "--json", str(report), "--quiet")
    summary = json.loads(report.read_text())
    assert (summary["events"], summary["quarantined_rows"], summary["users"]) == (3, 1, 1)
    assert summary["events_left"] == 2
    assert summary["oldest_remaining"] == datetime.fromtimestamp(_day(5), UTC).isoformat()
    assert _counts(db) == (2, 1, 2)
    with EventStore(db, read_only=True) as store:
        users = {r[0] for r in store.con.execute("SELECT user_id FROM users").fetchall()}
        reasons = store.con.execute("SELECT reason FROM quarantine").fetchall()
    assert users == {"stays", "new"} and reasons == [("unknown_behavior",)]
    assert dry.stdout.count("\n") > 3 and "events would delete" in dry.stdout


def test_retain_is_one_transaction(tmp_path: Path) -> None:
    db = _retain_store(tmp_path)

    def fail_midway(stage: str) -> None:
        if stage.startswith("removing users"):
            raise RuntimeError("killed")

    with EventStore(db) as store, pytest.raises(RuntimeError):
        store.retain(datetime(2024, 1, 4, tzinfo=UTC), progress=fail_midway)
    assert _counts(db) == (5, 2, 3)


def test_retain_older_than_counts_back_from_now(cli, tmp_path: Path) -> None:
    db = _retain_store(tmp_path)
    cli.ok("retain", "--older-than", "1w", "--db", str(db), "--quiet")  # all of 2024-01 is older
    assert _counts(db)[0] == 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--older-than", "180x"], "--older-than '180x' is not a duration"),
        (["--older-than", "180d", "--before", "2024-01-01"], "give one of --older-than"),
        ([], "give one of --older-than"),
    ],
)
def test_retain_refuses_unclear_horizons(cli, tmp_path: Path, args, says) -> None:
    db = _retain_store(tmp_path)
    result = cli("retain", *args, "--db", str(db))
    assert result.exit_code == 1 and says in result.stderr
    assert _counts(db) == (5, 2, 3)
