"""`ebbtide campaign analyze`, `uplift` and `synth`: what a campaign did, and who responds.

`analyze` compares each arm with control (A/B with SRM check, uplift curves, the value of a
targeted plan); `uplift` learns who responds, on the log's own columns or on each user's
store features at the campaign start, and can write the effects `ebbtide plan --effects`
reads; `synth` writes a log with known effects. Like every command module, it only turns
options into library calls; `ebbtide.cli.main` adds the group to the app as `campaign`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from ebbtide.cli.engagement import (
    HEADING,
    AttributionWindowOption,
    ClickWindowOption,
    print_rates,
    rates_config,
    store_rates,
)
from ebbtide.cli.options import (
    ArmColOption,
    ControlOption,
    DebugOption,
    after_last_event,
    err,
    load_model,
    names,
    one_name,
    out,
    parse_duration,
    parse_instant,
    require_store,
    write_frame,
    write_json,
    write_text,
)
from ebbtide.errors import CampaignWarning, ConfigError
from ebbtide.store import EventStore

app = typer.Typer(
    help="Campaign logs: analyse one (A/B, uplift, plan value), learn uplift, or synthesise one.",
    no_args_is_help=True,
)

LogArgument = Annotated[Path, typer.Argument(help="Campaign log: .csv (.gz) or .parquet.")]
UserColOption = Annotated[str, typer.Option(help="User id column.")]
SeedOption = Annotated[int, typer.Option(help="Seeds splits, learners and resamples.")]
JsonOption = Annotated[Path | None, typer.Option("--json", help="Also write the results as JSON.")]
FeatureModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model-dir", help="With --db: add this model's outputs (a `train` folder) as features."
    ),
]
FeatureFamilyOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="With --db: fit this family (e.g. decay) on the events before --at and add its"
        " outputs as features; a --model-dir must be fitted no later than --at.",
    ),
]
FeatureAtOption = Annotated[
    str | None,
    typer.Option("--at", help="With --db: campaign start; features use events before it."),
]
HorizonOption = Annotated[str, typer.Option(help="Window of the model's probabilities.")]


@app.command("synth")
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
    _debug: DebugOption = False,
) -> None:
    """Write a randomised campaign log (control, push, coupon) with known true effects."""
    from ebbtide.synthetic_campaigns import CampaignConfig, generate_campaign

    campaign = generate_campaign(CampaignConfig(customers=customers, targeted=targeted, seed=seed))
    write_frame(campaign.log, out_file)
    if truth_out is not None:
        write_frame(campaign.truth, truth_out)


@contextmanager
def _campaign_notes() -> Iterator[None]:
    """Show the data warnings raised while analysing (dropped rows, SRM...) as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CampaignWarning)
        yield
    console = err()
    for message in dict.fromkeys(str(w.message) for w in caught if w.category is CampaignWarning):
        console.print(f"[yellow]note:[/] {escape(message)}", highlight=False)


def _known_users(db: Path) -> Any:
    require_store(db)
    with EventStore(db, read_only=True) as store:
        return store.con.execute("SELECT user_id FROM users").df()["user_id"].to_numpy()


@app.command("analyze")
def campaign_analyze(
    log: LogArgument,
    arm_col: ArmColOption,
    control: ControlOption,
    outcomes: Annotated[
        str | None,
        typer.Option(
            help="Outcome columns, comma-separated, e.g. visit,conversion,spend; may be left"
            " out with --db --at, which measure clicks, conversion and ratings in the store."
        ),
    ] = None,
    treatments: Annotated[
        str | None, typer.Option(help="Arms to compare, comma-separated; default all.")
    ] = None,
    propensity_col: Annotated[
        str | None, typer.Option(help="Logged probability of each row's own arm.")
    ] = None,
    features: Annotated[
        str | None,
        typer.Option(
            help="Pre-campaign columns, comma-separated, to learn an uplift score and a plan from."
        ),
    ] = None,
    score_col: Annotated[
        str | None, typer.Option(help="Rank by this column instead (higher = more uplift).")
    ] = None,
    policy_col: Annotated[
        str | None, typer.Option(help="Column with the arm a proposed plan gives each row.")
    ] = None,
    learners: Annotated[
        str,
        typer.Option(
            help="Uplift learner of the score: one of t, x, dr (`campaign uplift` compares them)."
        ),
    ] = "x",
    bootstrap: Annotated[int, typer.Option(help="Resamples for off-policy intervals.")] = 200,
    seed: SeedOption = 0,
    user_col: UserColOption = "user_id",
    db: Annotated[
        Path | None,
        typer.Option(
            help="Event store (must exist): warn about unknown users; with --at join store_*."
        ),
    ] = None,
    model_dir: FeatureModelOption = None,
    family: FeatureFamilyOption = None,
    at: FeatureAtOption = None,
    horizon: HorizonOption = "7d",
    click_window: ClickWindowOption = "1h",
    attribution_window: AttributionWindowOption = "1d",
    json_out: JsonOption = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Also write the tables as Markdown.")
    ] = None,
    _debug: DebugOption = False,
) -> None:
    """Each arm against control (rates, revenue, CIs, p-values, SRM), uplift curves, plan value.

    With --db and --at, also the click-through rate, conversion and mean rating of each arm
    from the store's impressions, clicks and ratings after --at.
    """
    from ebbtide.activate.campaign_analysis import analyze_campaign
    from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log

    learner = one_name(
        learners, "--learners", "analyze learns one uplift score (`campaign uplift` compares)"
    )
    config = rates_config(click_window, attribution_window)
    if outcomes is None:
        if db is None or at is None:
            raise ConfigError(
                "--outcomes: name the log's outcome columns, or give --db and --at to measure"
                " clicks, conversion and ratings from the store"
            )
        with _campaign_notes():
            frame = read_campaign_log(log, user_col=user_col)
            rates = _arm_rates(frame, db, at, arm_col, control, user_col, config, required=True)
        print_rates(rates, f"per arm after {at}")
        write_json(json_out, {"engagement": rates.to_dict()})
        if markdown_out is not None:
            write_text(markdown_out, f"{HEADING}\n\n{rates.to_markdown()}")
        return
    with _campaign_notes():
        frame = read_campaign_log(log, user_col=user_col)
        known = None
        if db is not None and at is not None:
            frame, known, _ = _join_store_features(
                frame, db, model_dir, family, at, horizon, user_col
            )
        elif db is not None:
            known = _known_users(db)
        data = prepare_campaign(
            frame, arm_col=arm_col, control=control, outcomes=names(outcomes),
            user_col=user_col, treatments=names(treatments) or None,
            propensity_col=propensity_col, known_users=known,
        )  # fmt: skip
        result = analyze_campaign(
            data, features=names(features) or None, score_col=score_col,
            policy_col=policy_col, learner=learner, n_bootstrap=bootstrap, seed=seed,
        )  # fmt: skip
        _print_analysis(result)
        rates = None
        if db is not None and at is not None:
            arms = data.frame[[user_col]].assign(ebbtide_arm=data.arm)
            rates = _arm_rates(arms, db, at, "ebbtide_arm", data.control, user_col, config)
        if rates is not None:
            print_rates(rates, f"per arm after {at}")
        payload = result.to_dict()
        if rates is not None:
            payload["engagement"] = rates.to_dict()
        write_json(json_out, payload)
        if markdown_out is not None:
            extra = f"\n{HEADING}\n\n{rates.to_markdown()}" if rates is not None else ""
            write_text(markdown_out, result.to_markdown() + extra)


def _arm_rates(
    frame: Any,
    db: Path,
    at: str,
    arm_col: str,
    control: str,
    user_col: str,
    config: Any,
    *,
    required: bool = False,
) -> Any:
    """Each arm's CTR, conversion and mean rating from the store's events after `at`; None
    (with a note) when there are none, unless `required`."""
    import pandas as pd

    from ebbtide.activate.campaign_log import require_user_column

    require_user_column(frame, user_col)
    if arm_col not in frame.columns:
        raise ConfigError(f"campaign log lacks column {arm_col!r}; available: {list(frame)}")
    labels = frame[arm_col].astype("string").str.strip()
    keep = labels.notna() & (labels != "")
    arms = pd.Series(
        labels[keep].to_numpy(dtype=object), index=frame.loc[keep, user_col].astype(str)
    )
    require_store(db)
    since = parse_instant(at, "--at")
    with EventStore(db, read_only=True) as store:
        rates = store_rates(store, since=since, config=config, arms=arms, control=str(control))
    if rates is None:
        message = f"the store has no impressions, clicks or ratings after {at}"
        if required:
            raise ConfigError(f"{message}: nothing to measure without --outcomes")
        err().print(f"note: {message}: no click-through table", highlight=False, markup=False)
    return rates


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
    console = out()
    console.print(table)
    srm = result.ab.srm
    verdict = "[bold red]MISMATCH[/]" if srm["srm_detected"] else "ok"
    console.print(
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
        console.print(curves)
    for value in result.policy_values:
        plan = Table(title=f"Plan value on {value.outcome} ({result.policy_source})")
        for name in ("estimator", "mean per user", "95% interval"):
            plan.add_column(name, justify="left" if name == "estimator" else "right")
        for row in value.table.itertuples(index=False):
            plan.add_row(
                row.estimator, f"{row.value:.4g}", f"[{row.ci_low:.4g}, {row.ci_high:.4g}]"
            )
        console.print(plan)


@app.command("uplift")
def campaign_uplift(
    log: LogArgument,
    arm_col: ArmColOption,
    control: ControlOption,
    treatments: Annotated[
        str, typer.Option(help="Arm value of the treatment to model (one per run).")
    ],
    outcomes: Annotated[
        str, typer.Option(help="Outcome column to model (one per run), e.g. visit or conversion.")
    ],
    features: Annotated[
        str | None,
        typer.Option(help="Feature columns, comma-separated; default with --db: all store_*."),
    ] = None,
    test_size: Annotated[float, typer.Option(help="Held-out share for the scores.")] = 0.3,
    learners: Annotated[
        str, typer.Option(help="Learners to compare, comma-separated: t,x,dr.")
    ] = "t,x,dr",
    propensity_col: Annotated[
        str | None, typer.Option(help="Logged P(treatment) per row; default: learned.")
    ] = None,
    seed: SeedOption = 0,
    user_col: UserColOption = "user_id",
    db: Annotated[
        Path | None,
        typer.Option(help="Event store (must exist): join store_* features of each user."),
    ] = None,
    model_dir: FeatureModelOption = None,
    family: FeatureFamilyOption = None,
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
    effects_at: Annotated[
        str | None,
        typer.Option(
            help="Instant the effects are scored at (ISO 8601); default: after the last event."
        ),
    ] = None,
    actions: Annotated[
        str | None,
        typer.Option(
            help="Catalogue actions the treatment stands for, comma-separated (default: its name)."
        ),
    ] = None,
    _debug: DebugOption = False,
) -> None:
    """Fit T-, X- and DR-learners on one split; Qini, AUUC and uplift@k on the held-out rows."""
    from ebbtide.activate.campaign_log import prepare_campaign, read_campaign_log
    from ebbtide.activate.uplift import build_learner, compare_learners

    treatment = one_name(treatments, "--treatments", "uplift models one arm against control")
    outcome = one_name(outcomes, "--outcomes", "uplift models one outcome; run it once per outcome")
    if effects_out is not None and db is None:
        raise ConfigError("--effects-out scores the store's users: give --db and --at too")
    with _campaign_notes():
        frame = read_campaign_log(log, user_col=user_col)
        known, feature_names = None, []
        if db is not None:
            frame, known, feature_names = _join_store_features(
                frame, db, model_dir, family, at, horizon, user_col
            )
        chosen = names(features) or feature_names
        if not chosen:
            raise ConfigError("name the feature columns with --features (or give --db --at)")
        data = prepare_campaign(
            frame, arm_col=arm_col, control=control, outcomes=[outcome], user_col=user_col,
            treatments=[treatment], propensity_col=propensity_col, known_users=known,
        )  # fmt: skip
        treated, y = data.arm == treatment, data.outcome_values(outcome)
        propensity = _treatment_propensity(data, treated)
        comparison = compare_learners(
            data.frame, treated, y, chosen, learners=names(learners), test_size=test_size,
            seed=seed, propensity=propensity,
        )  # fmt: skip
        _print_comparison(comparison, treatment, outcome)
        write_json(json_out, comparison.to_dict() | {"treatment": treatment, "outcome": outcome})
        if score_out is not None:
            scores = data.frame[[user_col]].copy()
            scores["split"] = "train"
            scores.loc[comparison.test_scores.index, "split"] = "test"
            for name, fitted in comparison.models.items():
                scores[f"uplift_{name}"] = fitted.predict(data.frame[chosen])
            write_frame(scores, score_out)
        if effects_out is not None:
            learned = comparison.table[comparison.table["learner"] != "random"]
            best = learned.sort_values("qini", ascending=False, kind="stable")["learner"].iloc[0]
            final = build_learner(best, random_state=seed)
            final.fit(data.frame[chosen], treated, y, propensity)
            stands_for = names(actions) or [treatment]
            effects = _store_effects(
                final,
                chosen,
                db,
                model_dir,
                family,
                effects_at,
                horizon,
                stands_for,
            )
            write_frame(effects, effects_out)
            out().print(
                f"effects of {', '.join(stands_for)} for {effects['user_id'].nunique():,} store"
                f" users by the {best}-learner (best held-out Qini) -> {effects_out}",
                highlight=False,
            )


def _feature_model(model_dir: Path | None, family: str | None) -> Any:
    """A saved model (refused later if fitted after the feature instant), a family name to
    fit at that instant, or None."""
    if model_dir is not None and family is not None:
        raise ConfigError("give --model-dir or --model, not both")
    return load_model(model_dir) if model_dir is not None else family


def _join_store_features(
    frame: Any,
    db: Path,
    model_dir: Path | None,
    family: str | None,
    at: str | None,
    horizon: str,
    user_col: str,
) -> tuple[Any, Any, list[str]]:
    """The log with each user's store_* features at the campaign start joined on."""
    from ebbtide.activate.campaign_log import require_user_column
    from ebbtide.activate.store_features import attach_store_features, store_features

    require_user_column(frame, user_col)
    if at is None:
        raise ConfigError("--db needs --at, the campaign start: features use events before it")
    require_store(db)
    when, window = parse_instant(at, "--at"), parse_duration(horizon, "--horizon")
    model = _feature_model(model_dir, family)
    with EventStore(db, read_only=True) as store:
        table = store_features(store, model, at=when, horizon=window)
        known = store.con.execute("SELECT user_id FROM users").df()["user_id"].to_numpy()
    columns = [name for name in table.columns if name != "user_id"]
    clash = sorted(set(columns) & set(frame.columns))
    if clash:
        raise ConfigError(f"the log already has column(s) {clash}; rename them in the log")
    return attach_store_features(frame, table, user_col=user_col), known, columns


def _store_effects(
    learner: Any,
    features: list[str],
    db: Path,
    model_dir: Path | None,
    family: str | None,
    effects_at: str | None,
    horizon: str,
    actions: list[str],
) -> Any:
    """Each store user's predicted effect at `effects_at`, once per catalogue action."""
    import pandas as pd

    from ebbtide.activate.store_features import store_features

    outside = [name for name in features if not name.startswith("store_")]
    if outside:
        raise ConfigError(
            f"features {outside} come from the log, not the store, so store users cannot be "
            "scored: use store_* features only with --effects-out"
        )
    with EventStore(db, read_only=True) as store:
        when = parse_instant(effects_at, "--effects-at") if effects_at else after_last_event(store)
        model = _feature_model(model_dir, family)
        table = store_features(store, model, at=when, horizon=parse_duration(horizon, "--horizon"))
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
    console = out()
    console.print(table)
    console.print(comparison.normalisation, highlight=False)
