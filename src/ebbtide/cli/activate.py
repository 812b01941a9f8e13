"""`ebbtide segments`, `ebbtide plan` and `ebbtide campaign ...`: the activation commands.

Kept apart from `ebbtide.cli` (which registers them) so that each file holds one stage's
wiring; like the rest of the CLI these only turn options into library calls.
"""

from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from ebbtide.cli import (
    DbOption,
    _after_last_event,
    _key_value_table,
    _require_store,
    _user_errors,
    _write_frame,
    app,
    err,
    out,
    parse_duration,
    parse_instant,
)
from ebbtide.errors import CampaignWarning, ConfigError
from ebbtide.store import EventStore

campaign_app = typer.Typer(
    help="Campaign logs: analyse one (A/B, uplift, plan value), learn uplift, or synthesise one.",
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
                    model, before=parse_instant(compare_with), at=when, horizon=window, top=top,
                    now=(users, categories),
                )  # fmt: skip
        _write_frame(table, out_file)
        if warning is not None:
            _write_frame(warning, warning_out or out_file.with_name("early_warning.csv"))
        counts = table["segment"].value_counts()
        rows = [(name, f"{counts.get(name, 0):,}") for name in counts.index]
        out.print(_key_value_table(f"Segments at {when.isoformat()} ({horizon})", rows))


@app.command()
def plan(
    model_dir: ModelOption,
    at: Annotated[str, typer.Option(help="Plan as of this instant (ISO 8601; UTC default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    budget: Annotated[
        float | None, typer.Option(help="Spend limit; overrides the catalogue's budget.")
    ] = None,
    actions_file: Annotated[
        Path | None,
        typer.Option("--actions", help="Action catalogue (TOML); default: the shipped one."),
    ] = None,
    objective: Annotated[
        str | None, typer.Option(help="conversions or margin; overrides the catalogue.")
    ] = None,
    horizon: Annotated[str, typer.Option(help="Return window after --at: 24h, 7d.")] = "7d",
    effects_file: Annotated[
        Path | None,
        typer.Option(
            "--effects",
            help="Learned effects (user_id, action, uplift[, p_conversion]); default: the "
            "prior response model, flagged as an assumption.",
        ),
    ] = None,
    contacts_file: Annotated[
        Path | None,
        typer.Option(
            "--contacts",
            help="Contact history (user_id, last_contact time) for the frequency cap.",
        ),
    ] = None,
    order_value: Annotated[
        float | None,
        typer.Option(help="Mean order value; default: the mean purchase in the log."),
    ] = None,
    top_k: Annotated[int, typer.Option(help="Items to show each contacted user.")] = 5,
    method: Annotated[str, typer.Option(help="auto, exact or greedy.")] = "auto",
    out_file: Annotated[
        Path, typer.Option("--out", help="The plan, one row per user: .parquet, .csv or .json.")
    ] = Path("plan.parquet"),
    summary_out: Annotated[
        Path | None, typer.Option(help="Also write the headline numbers as JSON.")
    ] = None,
) -> None:
    """Choose at most one action per user, within budget and caps, and the items to show."""
    from ebbtide.activate.actions import default_actions, load_actions, override
    from ebbtide.activate.reactivation import plan_reactivation
    from ebbtide.models.base import Model
    from ebbtide.models.scoring import available_families

    with _user_errors():
        _require_store(db)
        available_families()
        when, window = parse_instant(at), parse_duration(horizon)
        catalogue = load_actions(actions_file) if actions_file else default_actions()
        catalogue = override(catalogue, budget=budget, objective=objective)
        effects = _read_table(effects_file, "effects table") if effects_file else None
        history = _days_since_contact(contacts_file, when) if contacts_file else None
        with EventStore(db, read_only=True) as store:
            model = Model.load(model_dir, store)
            result = plan_reactivation(
                model, store, at=when, horizon=window, catalogue=catalogue, effects=effects,
                last_contact_days_ago=history, order_value=order_value, top_k=top_k,
                method=method,
            )  # fmt: skip
        _write_frame(result.table, out_file)
        summary = result.summary()
        if summary_out is not None:
            summary_out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        _print_plan(result, out_file)


def _read_table(path: Path, what: str):
    from ebbtide.activate.campaign_log import read_campaign_log

    return read_campaign_log(path, what=what)


def _days_since_contact(path: Path, at):
    """Days from each user's last contact to `at` (the planner's frequency-cap input)."""
    import pandas as pd

    from ebbtide.errors import ConfigError

    table = _read_table(path, "contact history")
    missing = [name for name in ("user_id", "last_contact") if name not in table.columns]
    if missing:
        raise ConfigError(
            f"contact history {path} lacks column(s) {missing}; need user_id, last_contact"
        )
    when = pd.to_datetime(table["last_contact"], utc=True, errors="coerce")
    if when.isna().any():
        bad = table.loc[when.isna(), "last_contact"].iloc[0]
        raise ConfigError(f"contact history {path}: last_contact {bad!r} is not a time")
    days = (pd.Timestamp(at) - when).dt.total_seconds() / 86_400
    if (days < 0).any():
        row = table.loc[days < 0].iloc[0]
        raise ConfigError(
            f"contact history {path}: user {row.user_id!r} was contacted at {row.last_contact},"
            " after --at; plan at a later time or fix the history"
        )
    return days.groupby(table["user_id"].to_numpy()).min()


def _print_plan(result, out_file: Path) -> None:
    summary = result.summary()
    currency = summary["currency"]
    rows = [
        ("users", f"{summary['users']:,}"),
        ("contacts", f"{summary['contacts']:,}"),
        ("budget", f"{summary['budget']:,.2f} {currency}"),
        ("spend", f"{summary['spend']:,.2f} {currency}"),
        ("expected extra conversions", f"{summary['expected_conversions']:,.2f}"),
        ("solver", f"{summary['method']} (gap {summary['gap']:.3g})"),
    ]
    out.print(_key_value_table(f"Plan at {summary['at']} -> {out_file}", rows))
    table = Table(title="By action and segment")
    for name in ("action", "segment", "users", "cost", "extra conversions"):
        table.add_column(name, justify="left" if name in ("action", "segment") else "right")
    for row in result.by_action_and_segment().itertuples():
        table.add_row(
            row.action, row.segment, f"{row.users:,}", f"{row.cost:,.2f}",
            f"{row.expected_conversions:,.2f}",
        )  # fmt: skip
    out.print(table)
    for note in summary["notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)


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


LogArgument = Annotated[Path, typer.Argument(help="Campaign log: .csv (.gz) or .parquet.")]
ArmColOption = Annotated[str, typer.Option(help="Column holding each row's arm.")]
ControlOption = Annotated[str, typer.Option(help="Arm value of the control group.")]
UserColOption = Annotated[str, typer.Option(help="User id column.")]
SeedOption = Annotated[int, typer.Option(help="Seeds splits, learners and resamples.")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")]


def _names(text: str | None) -> list[str]:
    """A comma-separated option as a list (empty entries dropped)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@contextmanager
def _campaign_notes():
    """Show the data warnings raised while analysing (dropped rows, SRM...) as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CampaignWarning)
        yield
    for message in dict.fromkeys(str(w.message) for w in caught if w.category is CampaignWarning):
        err.print(f"[yellow]note:[/] {message}", highlight=False, soft_wrap=True)


def _known_users(db: Path | None):
    if db is None:
        return None
    _require_store(db)
    with EventStore(db, read_only=True) as store:
        return store.con.execute("SELECT user_id FROM users").df()["user_id"].to_numpy()


@campaign_app.command("analyze")
def campaign_analyze(
    log: LogArgument,
    arm_col: ArmColOption,
    control: ControlOption,
    outcomes: Annotated[str, typer.Option(help="Outcome columns, e.g. visit,conversion,spend.")],
    treatments: Annotated[
        str | None, typer.Option(help="Arms to compare (comma-separated); default all.")
    ] = None,
    propensity_col: Annotated[
        str | None, typer.Option(help="Logged probability of each row's own arm.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(help="Pre-campaign columns to learn an uplift score and a plan from."),
    ] = None,
    score_col: Annotated[
        str | None, typer.Option(help="Rank by this column instead (higher = more uplift).")
    ] = None,
    policy_col: Annotated[
        str | None, typer.Option(help="Column with the arm a proposed plan gives each row.")
    ] = None,
    learner: Annotated[str, typer.Option(help="Uplift learner: t, x or dr.")] = "x",
    bootstrap: Annotated[int, typer.Option(help="Resamples for off-policy intervals.")] = 200,
    seed: SeedOption = 0,
    user_col: UserColOption = "user_id",
    db: Annotated[
        Path | None,
        typer.Option(help="Event store: warn about unknown users; with --at join store_*."),
    ] = None,
    model_dir: FeatureModelOption = None,
    at: FeatureAtOption = None,
    horizon: HorizonOption = "7d",
    json_out: JsonOption = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")
    ] = None,
) -> None:
    """Each arm against control (rates, revenue, CIs, p-values, SRM), uplift curves, plan value."""
    from ebbtide.activate.campaign_analysis import analyze_campaign
    from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log

    with _user_errors(), _campaign_notes():
        frame = read_campaign_log(log, user_col=user_col)
        known = None
        if db is not None and at is not None:
            frame, known, _ = _join_store_features(frame, db, model_dir, at, horizon, user_col)
        elif db is not None:
            known = _known_users(db)
        data = prepare_campaign(
            frame, arm_col=arm_col, control=control, outcomes=_names(outcomes),
            user_col=user_col, treatments=_names(treatments) or None,
            propensity_col=propensity_col, known_users=known,
        )  # fmt: skip
        result = analyze_campaign(
            data, features=_names(features) or None, score_col=score_col,
            policy_col=policy_col, learner=learner, n_bootstrap=bootstrap, seed=seed,
        )  # fmt: skip
        _print_analysis(result)
        if json_out is not None:
            json_out.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
        if markdown_out is not None:
            markdown_out.write_text(result.to_markdown(), encoding="utf-8")


def _print_analysis(result) -> None:
    table = Table(title=f"Arms against control ({result.n_rows:,} rows)")
    for name in ("arm", "metric", "control", "arm mean", "diff [95% CI]", "rel.", "p Holm"):
        table.add_column(name, justify="left" if name in ("arm", "metric") else "right")
    for row in result.ab.table.itertuples(index=False):
        table.add_row(
            row.arm, row.metric.replace("_per_user", "/user"), f"{row.mean_control:.3g}",
            f"{row.mean_arm:.3g}",
            f"{row.diff:+.2g} [{row.diff_ci_low:+.2g}, {row.diff_ci_high:+.2g}]",
            f"{row.rel_diff:+.0%}", f"{row.p_value_holm:.2g}",
        )  # fmt: skip
    out.print(table)
    srm = result.ab.srm
    verdict = "[bold red]MISMATCH[/]" if srm["srm_detected"] else "ok"
    out.print(
        f"sample ratio: {verdict} (chi² p = {srm['p_value']:.3g}, observed {srm['observed']})"
    )
    if result.uplift:
        first = result.uplift[0]
        curves = Table(title=f"Uplift on {first.outcome} ({first.score})")
        for name in ("arm", "ranking", "qini", "qini n.", "auuc", "@10%", "@20%", "@30%"):
            curves.add_column(name, justify="left" if name in ("arm", "ranking") else "right")
        for arm in result.uplift:
            for label, numbers in (("model", arm.metrics), ("random", arm.random)):
                curves.add_row(
                    arm.arm, label,
                    *(f"{numbers[key]:.3g}" for key in (
                        "qini", "qini_normalised", "auuc",
                        "uplift_at_10pct", "uplift_at_20pct", "uplift_at_30pct",
                    )),
                )  # fmt: skip
        out.print(curves)
    for value in result.policy_values:
        plan = Table(title=f"Plan value on {value.outcome} ({result.policy_source})")
        for name in ("estimator", "mean per user", "95% interval"):
            plan.add_column(name, justify="left" if name == "estimator" else "right")
        for row in value.table.itertuples(index=False):
            plan.add_row(
                row.estimator, f"{row.value:.4g}", f"[{row.ci_low:.4g}, {row.ci_high:.4g}]"
            )
        out.print(plan)


StoreDbOption = Annotated[
    Path | None, typer.Option("--db", help="Event store: join store_* features of each user.")
]
FeatureModelOption = Annotated[
    Path | None,
    typer.Option("--model", "-m", help="With --db: add the model's outputs as features."),
]
FeatureAtOption = Annotated[
    str | None,
    typer.Option("--at", help="With --db: campaign start; features use events before it."),
]
HorizonOption = Annotated[str, typer.Option(help="Window of the model's probabilities.")]


@campaign_app.command("uplift")
def campaign_uplift(
    log: LogArgument,
    arm_col: ArmColOption,
    control: ControlOption,
    treatment: Annotated[str, typer.Option(help="Arm value of the treatment to model.")],
    outcome: Annotated[str, typer.Option(help="Outcome column, e.g. visit or conversion.")],
    features: Annotated[
        str | None,
        typer.Option(help="Feature columns, comma-separated; default with --db: all store_*."),
    ] = None,
    test_size: Annotated[float, typer.Option(help="Held-out share for the scores.")] = 0.3,
    learners: Annotated[str, typer.Option(help="Learners to compare: t,x,dr.")] = "t,x,dr",
    propensity_col: Annotated[
        str | None, typer.Option(help="Logged P(treatment) per row; default: learned.")
    ] = None,
    seed: SeedOption = 0,
    user_col: UserColOption = "user_id",
    db: StoreDbOption = None,
    model_dir: FeatureModelOption = None,
    at: FeatureAtOption = None,
    horizon: HorizonOption = "7d",
    json_out: JsonOption = None,
    score_out: Annotated[
        Path | None,
        typer.Option(help="Per-row uplift of every learner, with its split: .csv or .parquet."),
    ] = None,
    effects_out: Annotated[
        Path | None,
        typer.Option(
            help="With --db: refit the best learner on every row and write each store user's "
            "effect (user_id, action, uplift) for `ebbtide plan --effects`."
        ),
    ] = None,
    score_at: Annotated[
        str | None, typer.Option(help="Instant the effects are scored at; default: now.")
    ] = None,
    actions: Annotated[
        str | None,
        typer.Option(help="Catalogue actions the treatment stands for (default: its name)."),
    ] = None,
) -> None:
    """Fit T-, X- and DR-learners on one split; Qini, AUUC and uplift@k on the held-out rows."""
    from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log
    from ebbtide.activate.uplift import build_learner, compare_learners

    with _user_errors(), _campaign_notes():
        frame = read_campaign_log(log, user_col=user_col)
        known = None
        if db is not None:
            frame, known, feature_names = _join_store_features(
                frame, db, model_dir, at, horizon, user_col
            )
        elif effects_out is not None:
            raise ConfigError("--effects-out scores the store's users: give --db and --at too")
        chosen = _names(features) or (feature_names if db is not None else [])
        if not chosen:
            raise ConfigError("name the feature columns with --features (or give --db --at)")
        data = prepare_campaign(
            frame, arm_col=arm_col, control=control, outcomes=[outcome], user_col=user_col,
            treatments=[treatment], propensity_col=propensity_col, known_users=known,
        )  # fmt: skip
        treated, y = data.arm == treatment, data.outcome_values(outcome)
        propensity = _treatment_propensity(data, treated)
        comparison = compare_learners(
            data.frame, treated, y, chosen, learners=_names(learners), test_size=test_size,
            seed=seed, propensity=propensity,
        )  # fmt: skip
        _print_comparison(comparison, treatment, outcome)
        if json_out is not None:
            payload = comparison.to_dict() | {"treatment": treatment, "outcome": outcome}
            json_out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        if score_out is not None:
            scores = data.frame[[user_col]].copy()
            scores["split"] = "train"
            scores.loc[comparison.test_scores.index, "split"] = "test"
            for name, fitted in comparison.models.items():
                scores[f"uplift_{name}"] = fitted.predict(data.frame[chosen])
            _write_frame(scores, score_out)
        if effects_out is not None:
            learned = comparison.table[comparison.table["learner"] != "random"]
            best = learned.sort_values("qini", ascending=False, kind="stable")["learner"].iloc[0]
            final = build_learner(best, random_state=seed)
            final.fit(data.frame[chosen], treated, y, propensity)
            effects = _store_effects(
                final, chosen, db, model_dir, score_at, horizon, _names(actions) or [treatment]
            )
            _write_frame(effects, effects_out)
            out.print(
                f"effects of {', '.join(_names(actions) or [treatment])} for "
                f"{effects['user_id'].nunique():,} store users by the {best}-learner "
                f"(best held-out Qini) -> {effects_out}"
            )


def _join_store_features(frame, db: Path, model_dir, at: str | None, horizon: str, user_col):
    """The log with each user's store_* features at the campaign start joined on."""
    from ebbtide.activate.store_features import attach_store_features, store_features

    if at is None:
        raise ConfigError("--db needs --at, the campaign start: features use events before it")
    _require_store(db)
    with EventStore(db, read_only=True) as store:
        model = _load_model(model_dir, store)
        table = store_features(store, model, at=parse_instant(at), horizon=parse_duration(horizon))
        known = store.con.execute("SELECT user_id FROM users").df()["user_id"].to_numpy()
    names = [name for name in table.columns if name != "user_id"]
    clash = sorted(set(names) & set(frame.columns))
    if clash:
        raise ConfigError(f"the log already has column(s) {clash}; rename them in the log")
    return attach_store_features(frame, table, user_col=user_col), known, names


def _load_model(model_dir: Path | None, store: EventStore):
    if model_dir is None:
        return None
    from ebbtide.models.base import Model
    from ebbtide.models.scoring import available_families

    available_families()
    return Model.load(model_dir, store)


def _store_effects(learner, features, db, model_dir, score_at, horizon, actions):
    """Each store user's predicted effect at `score_at`, once per catalogue action."""
    import pandas as pd

    from ebbtide.activate.store_features import store_features

    outside = [name for name in features if not name.startswith("store_")]
    if outside:
        raise ConfigError(
            f"features {outside} come from the log, not the store, so store users cannot be "
            "scored: use store_* features only with --effects-out"
        )
    with EventStore(db, read_only=True) as store:
        when = parse_instant(score_at) if score_at else _after_last_event(store)
        model = _load_model(model_dir, store)
        table = store_features(store, model, at=when, horizon=parse_duration(horizon))
    uplift = learner.predict(table[features])
    return pd.concat(
        [
            pd.DataFrame({"user_id": table["user_id"], "action": name, "uplift": uplift})
            for name in actions
        ],
        ignore_index=True,
    )


def _treatment_propensity(data, treated):
    """P(treatment) per row from the logged propensity of each row's own arm, if given.

    Only a two-arm log determines it (P(treatment) = 1 − P(control)); with a third arm in
    the log the learners estimate it from the features instead.
    """
    if data.propensity is None:
        return None
    if data.dropped["reason"].str.startswith("arm '").any():
        warnings.warn(
            "the log has other arms besides these two, so the logged propensities do not "
            "give P(treatment | treatment or control): the learners estimate it instead",
            CampaignWarning,
            stacklevel=2,
        )
        return None
    return np.where(treated, data.propensity, 1.0 - data.propensity)


def _print_comparison(comparison, treatment: str, outcome: str) -> None:
    title = (
        f"{treatment} vs control on {outcome}: held-out {comparison.n_test:,} rows "
        f"(trained on {comparison.n_train:,})"
    )
    table = Table(title=title)
    columns = ["qini", "qini_normalised", "auuc", "auuc_normalised"]
    columns += [c for c in comparison.table.columns if c.startswith("uplift_at_")]
    headers = [
        c.replace("_normalised", " n.").replace("uplift_at_", "@").replace("pct", "%")
        for c in columns
    ]
    for name in ("learner", *headers, "fit s"):
        table.add_column(name, justify="left" if name == "learner" else "right")
    for row in comparison.table.to_dict(orient="records"):
        fit = "" if np.isnan(row["fit_seconds"]) else f"{row['fit_seconds']:.1f}"
        table.add_row(row["learner"], *(f"{row[c]:.3g}" for c in columns), fit)
    out.print(table)
    out.print(comparison.normalisation, highlight=False)
