"""`ebbtide ingest` of an order log: it says when purchases collapse, and --order-col keeps them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .test_orders import ORDERS  # two orders of u1 in one second share p1 and p2

GENERIC = ["--format", "generic", "--user-col", "user_id", "--item-col", "product_id"]
GENERIC += ["--time-col", "ts", "--behavior", "buy", "--quiet"]


def test_ingest_says_how_to_keep_same_second_orders(cli, tmp_path: Path) -> None:
    log = tmp_path / "orders.csv"
    log.write_text(ORDERS)
    summary_file = tmp_path / "summary.json"
    db = tmp_path / "a.duckdb"
    result = cli.ok("ingest", str(log), "--db", str(db), "--json", str(summary_file), *GENERIC)
    assert "repeats within the file" in result.stdout and "of them purchases" in result.stdout
    notes = [line for line in result.stderr.splitlines() if line.startswith("Note: ")]
    assert len(notes) == 1 and "--order-col order_id" in notes[0]
    assert "DataQualityWarning" not in result.output  # the note, not a Python warning
    summary = json.loads(summary_file.read_text())
    assert (summary["rows_read"], summary["loaded"], summary["duplicates"]) == (6, 4, 2)
    assert summary["duplicate_buys_in_file"] == 2 and len(summary["notes"]) == 1

    db = tmp_path / "b.duckdb"
    args = ["--json", str(summary_file), "--order-col", "order_id"]
    result = cli.ok("ingest", str(log), "--db", str(db), *args, *GENERIC)
    assert "Note:" not in result.output
    summary = json.loads(summary_file.read_text())
    assert (summary["rows_read"], summary["loaded"], summary["duplicates"]) == (6, 6, 0)
    assert summary["notes"] == []


def test_ingest_help_documents_order_col(cli) -> None:
    help_text = re.sub(r"[\s│]+", " ", cli.ok("ingest", "--help").output)  # unwrap the panel
    assert "--order-col" in help_text and "same as --session-col" in help_text
