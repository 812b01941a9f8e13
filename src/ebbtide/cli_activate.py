"""`ebbtide segments`, `ebbtide plan` and `ebbtide campaign ...`: the activation commands.

Kept apart from `ebbtide.cli` (which registers them) so that each file holds one stage's
wiring; like the rest of the CLI these only turn options into library calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ebbtide.cli import (
    DbOption,
    _key_value_table,
    _require_store,
    _user_errors,
    _write_frame,
    app,
    out,
    parse_duration,
    parse_instant,
)
from ebbtide.store import EventStore

campaign_app = typer.Typer(
    help="Campaign logs: synthetic ones with known effects (analysis commands to follow).",
    no_args_is_help=True,
)
app.add_typer(campaign_app, name="campaign")

ModelOption = Annotated[Path, typer.Option("--model", "-m", help="A folder written by train.")]


@app.command()
def segments(
    model_dir: ModelOption,
    at: Annotated[str, typer.Option(help="Segment at this instant (ISO 8601; UTC default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    horizon: Annotated[str, typer.Option(help="Return window after --at: 24h, 7d.")] = "7d",
    compare_with: Annotated[
        str | None,
        typer.Option(help="Earlier instant: also rank the users who faded most since then."),
    ] = None,
    out_file: Annotated[
        Path, typer.Option("--out", help="Per-user segments: .parquet, .csv or .json.")
    ] = Path("segments.parquet"),
    warning_out: Annotated[
        Path | None, typer.Option(help="Churn early-warning list (with --compare-with).")
    ] = None,
    top: Annotated[int, typer.Option(help="Users in the early-warning list.")] = 100,
) -> None:
    """Put every user with history before --at in a segment, with the numbers behind it."""
    from ebbtide.activate.segments import assign_segments, early_warning
    from ebbtide.models.base import Model
    from ebbtide.models.scoring import available_families, score_users

    with _user_errors():
        _require_store(db)
        available_families()
        when, window = parse_instant(at), parse_duration(horizon)
        with EventStore(db, read_only=True) as store:
            model = Model.load(model_dir, store)
            users, categories = score_users(model, at=when, horizon=window, k=1)
            table = assign_segments(users, categories, horizon=window)
            warning = None
            if compare_with is not None:
                warning = early_warning(
                    model, before=parse_instant(compare_with), at=when, horizon=window, top=top
                )
        _write_frame(table, out_file)
        if warning is not None:
            _write_frame(warning, warning_out or out_file.with_name("early_warning.csv"))
        counts = table["segment"].value_counts()
        rows = [(name, f"{counts.get(name, 0):,}") for name in counts.index]
        out.print(_key_value_table(f"Segments at {when.isoformat()} ({horizon})", rows))


@campaign_app.command("synth")
def campaign_synth(
    out_file: Annotated[Path, typer.Option("--out", help="Campaign log: .csv or .parquet.")],
    customers: Annotated[int, typer.Option(help="Rows of the log.")] = 64_000,
    targeted: Annotated[
        bool, typer.Option(help="Log a feature-dependent assignment with known propensities.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Same seed, same log.")] = 0,
    truth_out: Annotated[
        Path | None, typer.Option(help="Also write every customer's true outcome rates per arm.")
    ] = None,
) -> None:
    """Write a randomised campaign log (control, push, coupon) with known true effects."""
    from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

    with _user_errors():
        campaign = generate_campaign(
            CampaignConfig(customers=customers, targeted=targeted, seed=seed)
        )
        _write_frame(campaign.log, out_file)
        if truth_out is not None:
            _write_frame(campaign.truth, truth_out)
