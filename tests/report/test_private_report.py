"""The report's count tables hold the k threshold, and a private report names no user.

"Every count table" here means every table or figure of the page that reports a count of
users or events per group: the events per day and behaviour (figure and overview line),
users per category, per segment, per segment flow, per plan action and segment, per
calibration bin. Tables whose rows are single users (early warnings, contacts) are not
groups; under --dp-epsilon they are left out, which the last tests check.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from ebbtide.aggregates import ReleaseConfig
from ebbtide.ingest import ingest_file
from ebbtide.report import write_report
from ebbtide.store import EventStore
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

K = 10
#: decay alone: the report in seconds; the count tables do not depend on the family.
OPTIONS = {"models": ["decay"], "drilldown_users": 1}


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 120 synthetic users over 6 days, renamed ``shopper-NNNN`` so a scan finds them."""
    folder = tmp_path_factory.mktemp("private")
    log = generate(SynthConfig(users=120, days=6.0, categories=12, items_per_category=15, seed=4))
    raw = folder / "raw.csv"
    write_taobao_csv(log, raw)
    frame = pd.read_csv(raw, header=None, dtype=str)
    frame[0] = "shopper-" + frame[0].str.zfill(4)
    csv = folder / "log.csv"
    frame.to_csv(csv, header=False, index=False)
    path = folder / "shop.duckdb"
    with EventStore(path) as store:
        ingest_file(store, csv, "taobao")
    return path


@pytest.fixture(scope="module")
def plain(store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    page = tmp_path_factory.mktemp("plain") / "report.html"
    with EventStore(store_path, read_only=True) as store:
        data = write_report(store, page, **OPTIONS)
    return data, page.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def private(store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    page = tmp_path_factory.mktemp("dp") / "report.html"
    config = ReleaseConfig(epsilon=1.0, min_group_users=K, seed=0)
    with EventStore(store_path, read_only=True) as store:
        data = write_report(store, page, privacy=config, **OPTIONS)
    return data, page.read_text(encoding="utf-8")


def _user_ids(path: Path) -> list[str]:
    with EventStore(path, read_only=True) as store:
        return [row[0] for row in store.con.execute("SELECT user_id FROM users").fetchall()]


class _Tables(HTMLParser):
    """Every data <table> of the page (not the key-value "facts") as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag == "table":
            facts = "facts" in (dict(attrs).get("class") or "")
            self.tables.append({"facts": facts, "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None


def _count_cells(page: str) -> list[tuple[str, int]]:
    """(header, value) of every cell under a "users" or "events" header in a data table."""
    parser = _Tables()
    parser.feed(page)
    cells = []
    for table in parser.tables:
        if table["facts"]:
            continue
        header, *rows = table["rows"]
        for row in rows:
            for name, text in zip(header, row, strict=False):
                if name in ("users", "events") and text != "–":
                    cells.append((name, int(text.replace(",", ""))))
    return cells


def _released_frames(data) -> dict[str, pd.DataFrame]:
    return {
        "events by day": data.events_by_day,
        "categories": data.category_half_lives,
        "segments": data.segments,
        "flows": data.segment_flows,
        "plan": data.plan_by_action,
        "calibration": data.return_calibration,
    }


@pytest.mark.parametrize("which", ["plain", "private"])
def test_every_count_table_holds_the_threshold(which: str, request) -> None:
    data, page = request.getfixturevalue(which)
    for name, frame in _released_frames(data).items():
        assert (frame["users"] >= K).all(), name
    cells = _count_cells(page)
    assert any(header == "users" for header, _ in cells)  # the parser found the tables
    assert all(value >= K for header, value in cells if header == "users")
    tables = data.privacy["tables"]
    assert len(tables) == 6 and all(t["min_group_users"] >= K for t in tables)


def test_the_threshold_really_dropped_groups(plain, store_path: Path) -> None:
    """Without suppression some small groups exist: the default k = 10 is doing work."""
    data, page = plain
    with EventStore(store_path, read_only=True) as store:
        small = store.con.execute(
            """SELECT count(*) FROM (SELECT behavior, count(DISTINCT user_idx) AS n
            FROM events GROUP BY strftime(ts, '%Y-%m-%d'), behavior) WHERE n < ?""",
            [K],
        ).fetchone()[0]
    suppressed = sum(t["suppressed"] or 0 for t in data.privacy["tables"])
    assert small > 0 and suppressed >= small
    assert "users left out" in page and "true counts (no differential privacy)" in page


def test_a_private_report_names_no_user(private, store_path: Path) -> None:
    data, page = private
    ids = _user_ids(store_path)
    assert len(ids) > 100 and all(i.startswith("shopper-") for i in ids)
    assert [i for i in ids if i in page] == []
    assert "shopper-" not in page  # nor any id that was cut or escaped
    assert not data.drilldowns and data.early_warning.empty and data.plan_contacts.empty
    assert data.plan_table is None


def test_a_private_report_says_what_it_left_out_and_its_guarantee(private) -> None:
    data, page = private
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert "Private release." in text
    assert "ε = 1 in total, 0.1667 per count table" in text
    assert "Left out under differential privacy" in text
    assert "Model-evaluation numbers" in text and "are not noised" in text
    assert "decay no differential privacy" in text  # the model's training guarantee
    assert data.privacy["epsilon"] == 1.0 and data.privacy["unit"] == "user"


def test_a_plain_report_still_shows_users(plain, store_path: Path) -> None:
    data, page = plain
    assert "shopper-" in page and data.drilldowns and not data.early_warning.empty


def test_a_model_trained_privately_states_its_guarantee(plain) -> None:
    from dataclasses import replace

    from ebbtide.report.html import render_report

    guarantee = {
        "epsilon": 3.0, "delta": 1e-5, "noise_multiplier": 1.1, "max_grad_norm": 1.0,
        "sample_rate": 0.01, "steps": 1200, "unit": "user", "accountant": "rdp",
    }  # fmt: skip
    data = replace(plain[0], model_privacy={"neural": guarantee, "decay": None})
    text = " ".join(re.sub(r"<[^>]+>", " ", render_report(data)).split())
    assert "decay no differential privacy" in text
    assert "neural differentially private training: ε = 3.000, δ = 1e-05, per user" in text
    assert "1,200 steps, accountant rdp" in text
