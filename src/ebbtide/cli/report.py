"""`ebbtide report` and `ebbtide demo`: the main job end to end, ending in one HTML page.

Like every command module, it only turns options into library calls (the work itself is
`report.pipeline.build_report_data` and `report.html`); `ebbtide.cli.main` adds these
commands to the app.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from ebbtide.aggregates import DEFAULT_MIN_GROUP_USERS
from ebbtide.cli.options import (
    ArmColOption,
    CatalogueOption,
    ControlOption,
    DbOption,
    DebugOption,
    DpEpsilonOption,
    MaxSecondsOption,
    MinGroupUsersOption,
    QuietOption,
    TimeZoneOption,
    err,
    key_value_table,
    names,
    neural_budget,
    out,
    parse_duration,
    release_config,
    require_store,
    stages,
    write_frame,
    write_json,
)
from ebbtide.errors import CampaignWarning, ConfigError
from ebbtide.ingest import FormatName, ingest_file
from ebbtide.store import EventStore

app = typer.Typer()

#: What the demo gives the neural model, in seconds: about three minutes of training on
#: two cores, two thirds for the point process and one third for the next-item head.
DEMO_SECONDS = 180.0

ModelsOption = Annotated[
    str,
    typer.Option(
        help="Families compared on the holdout, comma-separated; the last that forecasts"
        " returns is drawn."
    ),
]
HoldoutOption = Annotated[
    str | None,
    typer.Option(help="Holdout at the end of the log: 1d, 7d; default 1d under a month, else 7d."),
]
PlanHorizonOption = Annotated[
    str, typer.Option(help="Return window behind segments and the plan: 24h, 7d.")
]
CampaignOption = Annotated[
    Path | None,
    typer.Option(
        "--campaign",
        help="A campaign that ran: its log (.csv, .parquet; see --arm-col ...) or its analysis"
        " (`ebbtide campaign analyze --json`).",
        rich_help_panel="Campaign",
    ),
]
OutcomesOption = Annotated[
    str, typer.Option(help="Outcome columns, comma-separated.", rich_help_panel="Campaign")
]
FeaturesOption = Annotated[
    str | None,
    typer.Option(
        help="Pre-campaign columns to learn the uplift score of the Qini curves from.",
        rich_help_panel="Campaign",
    ),
]


@app.command()
def report(
    db: DbOption = Path("ebbtide.duckdb"),
    out_file: Annotated[Path, typer.Option("--out", help="The HTML report to write.")] = Path(
        "ebbtide-report.html"
    ),
    models: ModelsOption = "popular,btyd,gbdt,decay,neural",
    holdout: HoldoutOption = None,
    plan_horizon: PlanHorizonOption = "7d",
    max_seconds: MaxSecondsOption = DEMO_SECONDS,
    catalogue_file: CatalogueOption = None,
    campaign_file: CampaignOption = None,
    arm_col: ArmColOption = "arm",
    control: ControlOption = "control",
    outcomes: OutcomesOption = "conversion",
    features: FeaturesOption = None,
    tables_dir: Annotated[
        Path | None,
        typer.Option(help="Also write the plan, early warnings and evaluation to this folder."),
    ] = None,
    tz: TimeZoneOption = "UTC",
    dp_epsilon: DpEpsilonOption = None,
    min_group_users: MinGroupUsersOption = DEFAULT_MIN_GROUP_USERS,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Evaluate, score, segment and plan on a store, and write one offline HTML report.

    Every table of counts per group leaves out groups under 10 users (--min-group-users;
    1 turns it off); --dp-epsilon makes every count noisy (user-level differential
    privacy) and leaves per-user content out of the report and of --tables-dir.
    """
    from ebbtide.report import write_report

    privacy = release_config(dp_epsilon, min_group_users, default_k=DEFAULT_MIN_GROUP_USERS)
    require_store(db)
    options = _pipeline_options(models, holdout, plan_horizon, max_seconds, catalogue_file)
    options["privacy"] = privacy
    if campaign_file is not None:
        options["campaign"] = _campaign(campaign_file, arm_col, control, outcomes, features)
    with EventStore(db, read_only=True) as store, stages(quiet, "report") as stage:
        data = write_report(store, out_file, on_stage=stage, source=str(db), tz=tz, **options)
    if tables_dir is not None:
        _write_tables(data, tables_dir)
    _print_summary(data, out_file)


@app.command()
def demo(
    data_file: Annotated[
        Path | None,
        typer.Option("--data", help="Your own log instead of the bundled Taobao sample."),
    ] = None,
    fmt: Annotated[
        FormatName, typer.Option("--format", "-f", help="Format of --data (see `ingest`).")
    ] = FormatName.TAOBAO,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out-dir",
            help="Folder for the store (events.duckdb, created if missing), the report and"
            " the tables.",
        ),
    ] = Path("ebbtide-demo"),
    models: ModelsOption = "popular,btyd,gbdt,decay,neural",
    holdout: HoldoutOption = None,
    plan_horizon: PlanHorizonOption = "7d",
    max_seconds: MaxSecondsOption = DEMO_SECONDS,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """The whole pipeline on the bundled real Taobao sample (or --data), ending in a report.

    Ingests into --out-dir/events.duckdb, fits and checks the models against the baselines,
    scores, segments and plans, and writes report.html and the tables beside it. A log
    that needs column mapping (format generic) is ingested first with `ebbtide ingest` and
    reported with `ebbtide report --db`.
    """
    from ebbtide.datasets import TAOBAO_SAMPLE_FACTS, taobao_sample_path
    from ebbtide.report import write_report

    if fmt == FormatName.GENERIC:
        raise ConfigError(
            "the generic format needs column options: run `ebbtide ingest --format "
            "generic ...`, then `ebbtide report --db STORE`"
        )
    source = data_file or taobao_sample_path()
    tz = "UTC" if data_file else str(TAOBAO_SAMPLE_FACTS["timezone"])
    options = _pipeline_options(models, holdout, plan_horizon, max_seconds, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    db = out_dir / "events.duckdb"
    report_path = out_dir / "report.html"
    with EventStore(db) as store, stages(quiet, "demo") as stage:  # one display for all
        summary = ingest_file(store, source, fmt, progress=stage)
        if summary.already_ingested:
            err().print(
                f"{source} is already in {db}: nothing new to load", highlight=False, markup=False
            )
        else:
            err().print(
                f"ingested {summary.loaded:,} events ({summary.duplicates:,} duplicates,"
                f" {summary.quarantined:,} quarantined) from {source}",
                highlight=False,
                markup=False,
            )
        data = write_report(
            store, report_path, on_stage=stage, source=f"{source} ({fmt.value})", tz=tz,
            **options,
        )  # fmt: skip
    _write_tables(data, out_dir)
    _print_summary(data, report_path)


def _pipeline_options(
    models: str,
    holdout: str | None,
    plan_horizon: str,
    max_seconds: float,
    catalogue_file: Path | None,
) -> dict[str, Any]:
    """CLI options as `build_report_data` arguments, checked before any work starts."""
    from ebbtide.activate.actions import load_actions

    families = names(models)
    if not families:
        raise ConfigError("--models is empty: name at least one family, e.g. decay,neural")
    return {
        "models": families,
        "settings": {"neural": neural_budget(max_seconds)},
        "holdout": parse_duration(holdout, "--holdout") if holdout else None,
        "plan_horizon": parse_duration(plan_horizon, "--plan-horizon"),
        "catalogue": load_actions(catalogue_file) if catalogue_file else None,
    }


def _campaign(
    path: Path, arm_col: str, control: str, outcomes: str, features: str | None
) -> dict[str, Any]:
    """A campaign analysis as a dict: read from its JSON, or computed from the log."""
    if path.suffix.lower() == ".json":
        try:
            campaign = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{path}: not a campaign analysis JSON ({exc}); write one with "
                "`ebbtide campaign analyze LOG ... --json FILE`, or pass the log itself"
            ) from None
        if not isinstance(campaign, dict) or "ab" not in campaign:
            raise ConfigError(
                f"{path}: no 'ab' table in it; write one with "
                "`ebbtide campaign analyze LOG ... --json FILE`, or pass the log itself"
            )
        return campaign
    from ebbtide.activate.campaign_analysis import analyze_campaign
    from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CampaignWarning)  # the analysis keeps them as notes
        data = prepare_campaign(
            read_campaign_log(path),
            arm_col=arm_col,
            control=control,
            outcomes=names(outcomes),
        )
        return analyze_campaign(data, features=names(features) or None).to_dict()


def _write_tables(data, folder: Path) -> None:
    """The tables behind the report, for a spreadsheet or the next program."""
    folder.mkdir(parents=True, exist_ok=True)
    if data.plan_table is not None:
        write_frame(data.plan_table, folder / "plan.csv")
    if (data.privacy or {}).get("epsilon") is None:  # a private report has no user list
        write_frame(data.early_warning, folder / "early_warning.csv")
    write_json(folder / "evaluation.json", data.comparison.to_dict())


def _print_summary(data, path: Path) -> None:
    summary = data.plan_summary
    main = data.comparison.table.set_index("model").loc[data.model]
    segments = ", ".join(f"{row.segment} {row.users:,}" for row in data.segments.itertuples())
    rows = [
        ("events", f"{data.overview['events']:,} of {data.overview['users']:,} users"),
        ("model drawn", data.model),
        ("return AUC on the holdout", _number(main.get("return_auc"))),
        (f"next items recall@{data.comparison.k}", _number(main.get("recall_at_k"))),
        ("segments", segments),
        ("plan", _plan_line(summary)),
        ("report", str(path)),
    ]
    out().print(key_value_table("ebbtide", rows))


def _plan_line(summary: dict[str, Any]) -> str:
    """Contacts, spend and conversions; a private report releases the contacts only."""
    line = f"{summary['contacts']:,} contacts"
    if summary.get("spend") is None:
        return line + f" (budget {summary['budget']:,.2f} {summary['currency']})"
    return (
        f"{line}, spend {summary['spend']:,.2f} of {summary['budget']:,.2f}"
        f" {summary['currency']}, {summary['expected_conversions']:.1f} expected incremental"
        " conversions"
    )


def _number(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"
