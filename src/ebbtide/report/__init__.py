"""The HTML report: `pipeline` computes its numbers, `html` draws them into one offline page.

from ebbtide import EventStore, write_report
with EventStore("shop.duckdb", read_only=True) as store:
    write_report(store, "report.html")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ebbtide.report.data import ReportData, UserDrilldown
from ebbtide.store import EventStore

__all__ = ["ReportData", "UserDrilldown", "write_report"]


def write_report(store: EventStore, path: str | Path, **options: Any) -> ReportData:
    """Run the main job on `store` and write the self-contained HTML report to `path`.

    `options` go to `report.pipeline.build_report_data` (models, settings, holdout,
    plan_horizon, catalogue, campaign, title, source, tz, on_stage, ...). Returns the
    numbers drawn, so a notebook can look at any table directly.
    """
    from ebbtide.report.html import write_html
    from ebbtide.report.pipeline import build_report_data

    data = build_report_data(store, **options)
    write_html(data, Path(path))
    return data
