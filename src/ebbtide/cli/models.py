"""`ebbtide train` and `ebbtide score`: fit a model before a cut-off, then ask it questions.

`train --cutoff T` fits on the events before T and saves the model in `--out-dir`;
`score --model-dir DIR --at T` writes every user's answers at T. Like every command module,
it only turns options into library calls; `ebbtide.cli.main` adds these commands to the app.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ebbtide.cli.options import (
    DbOption,
    DebugOption,
    Engine,
    EngineOption,
    InputOption,
    ModelDirOption,
    QuietOption,
    SparkMasterOption,
    after_last_event,
    key_value_table,
    load_model,
    names,
    out,
    parse_duration,
    parse_instant,
    parse_time_zone,
    record_saved_model,
    require_lake,
    require_store,
    stages,
    training_bar,
    write_frame,
)
from ebbtide.errors import ConfigError, EbbtideError
from ebbtide.store import EventStore

#: `--spark-master` by default: every core of this machine.
LOCAL_SPARK = "local[*]"

app = typer.Typer()


class Runtime(StrEnum):
    """How `score` runs the neural network (`ebbtide.models.neural_compressed`)."""

    torch = "torch"
    int8 = "int8"
    onnx = "onnx"


@app.command()
def train(
    ctx: typer.Context,
    model_name: Annotated[
        str, typer.Option("--model", "-m", help="Family: popular, btyd, gbdt, decay, neural.")
    ],
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Folder to save the model in.")],
    db: DbOption = Path("ebbtide.duckdb"),
    cutoff: Annotated[
        str | None,
        typer.Option(
            help="Fit on events strictly before this instant (ISO 8601; default: all), so"
            " that `score --at` that instant is an honest forecast."
        ),
    ] = None,
    device: Annotated[
        str, typer.Option(help="neural only: cpu, cuda or cuda:N (mixed precision on CUDA).")
    ] = "cpu",
    seed: Annotated[int | None, typer.Option(help="Seed of the seeded families.")] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            help="neural only: wall-clock budget in seconds of each training stage (point"
            " process, next-item head)."
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            help="neural only: continue the run whose checkpoint is in --out-dir (written"
            " after every epoch) instead of starting over."
        ),
    ] = False,
    horizons: Annotated[
        str | None,
        typer.Option(
            help="gbdt only: horizons to train on, comma-separated (e.g. 1h,1d,7d,30d;"
            " default: 1 h up to half the log's span, at most a year). Any horizon can be"
            " asked later; beyond the longest the answer is the longest's."
        ),
    ] = None,
    penalizer: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="btyd only: L2 penalty on the log-parameters (e.g. 0.001) for small or"
            " doubtful fits; 0 (default) reproduces the published estimates.",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            help="neural only: the shop's IANA time zone (e.g. Asia/Shanghai), where its"
            " days begin for the daily cycle's peak hour and weekly part (default UTC).",
            callback=lambda value: None if value is None else parse_time_zone(value, "--tz"),
        ),
    ] = None,
    dp_epsilon: Annotated[
        float | None,
        typer.Option(
            help="neural only: train with user-level differential privacy (DP-SGD), each"
            " user's whole history one unit, spending at most this ε (e.g. 8; smaller is"
            " more private and less accurate). No validation window or daily cycle then.",
        ),
    ] = None,
    dp_delta: Annotated[
        float | None,
        typer.Option(
            help="neural only, with --dp-epsilon: δ of the guarantee (default min(1e-5,"
            " 1/(10 users))).",
        ),
    ] = None,
    engine: EngineOption = Engine.LOCAL,
    spark_master: SparkMasterOption = LOCAL_SPARK,
    inputs: InputOption = None,
    nproc: Annotated[
        int,
        typer.Option(
            min=1,
            help="neural only: train with this many processes (PyTorch DDP, the users shared"
            " out; gloo on CPU, NCCL with --device cuda, one GPU each). Runs"
            " torch.distributed.run for you; under torchrun leave it out.",
        ),
    ] = 1,
    quiet: QuietOption = False,
    _debug: DebugOption = False,
) -> None:
    """Fit a model on the store's events before --cutoff and save it to --out-dir."""
    from ebbtide.models import distributed
    from ebbtide.models.scoring import build_model

    lake = require_lake(engine, inputs)
    if engine is Engine.SPARK:
        _only_for(model_name, "decay", "--engine spark")
        model, when, lake_rows = _train_in_spark(lake, spark_master, cutoff, quiet)
        model.save(out_dir)
        _print_trained(model, model_name, when, out_dir, lake_rows)
        return
    require_store(db)
    for flag, value in (("--dp-epsilon", dp_epsilon), ("--dp-delta", dp_delta)):
        if value is not None:
            _only_for(model_name, "neural", flag)
    if dp_delta is not None and dp_epsilon is None:
        raise ConfigError("--dp-delta sets δ of a private fit: give --dp-epsilon too")
    if dp_epsilon is not None and (nproc > 1 or distributed.launch_env() is not None):
        raise ConfigError(
            "--dp-epsilon trains in one process (one privacy account): leave out --nproc"
            " and do not launch with torchrun"
        )
    if nproc > 1:
        _only_for(model_name, "neural", "--nproc")
        raise typer.Exit(_launch_processes(ctx, nproc))
    main = distributed.is_main()  # only rank 0 of a DDP run reports and saves
    if distributed.launch_env() is not None:
        _only_for(model_name, "neural", "several processes (torchrun)")
    settings: dict[str, Any] = {}
    if device != "cpu":
        settings["device"] = device
    if max_seconds is not None:
        settings["max_train_seconds"] = max_seconds
        if model_name == "neural":
            settings["item_max_seconds"] = max_seconds
    if seed is not None:
        settings["seed"] = seed
    if horizons is not None:
        _only_for(model_name, "gbdt", "--horizons")
        settings["horizons_days"] = _horizons_days(horizons)
    if penalizer is not None:
        _only_for(model_name, "btyd", "--penalizer")
        settings["penalizer"] = penalizer
    if tz is not None:
        _only_for(model_name, "neural", "--tz")
        settings["time_zone"] = tz
    if dp_epsilon is not None:
        settings["dp_epsilon"] = dp_epsilon
    if dp_delta is not None:
        settings["dp_delta"] = dp_delta
    with EventStore(db, read_only=True) as store:
        when = parse_instant(cutoff, "--cutoff") if cutoff else after_last_event(store)
        model = build_model(model_name, **settings)
        checkpoint = out_dir / "checkpoint.pt"
        with training_bar(quiet or not main, f"training {model_name}") as report:
            model.fit(store, cutoff=when, progress=report, checkpoint=checkpoint, resume=resume)
    if not main:
        return
    model.save(out_dir)
    record_saved_model(db, out_dir, model_name)
    _print_trained(model, model_name, when, out_dir, [])


def _print_trained(
    model: Any, model_name: str, when: Any, out_dir: Path, lake_rows: list[tuple[str, str]]
) -> None:
    metrics = getattr(model, "metrics_", {})
    rows = [("family", model_name), ("trained on events before", when.isoformat())]
    rows += lake_rows
    rows += [
        (name, f"{value:,}" if isinstance(value, int) else _number(value))
        for name, value in metrics.items()
        if not isinstance(value, list | dict)  # curves, the guarantee: in config.json
    ]
    privacy = metrics.get("privacy")
    if privacy is not None:
        rows.append(("privacy", _guarantee(privacy)))
    if "horizons_days" in metrics:  # gbdt's training grid
        rows.append(("horizons (days)", ", ".join(f"{h:.3g}" for h in metrics["horizons_days"])))
    rows.append(("saved to", str(out_dir)))
    out().print(key_value_table("Trained", rows))


def _train_in_spark(
    lake: list[str], master: str, cutoff: str | None, quiet: bool
) -> tuple[Any, Any, list[tuple[str, str]]]:
    """Fit decay on a lake in Spark; returns the model, the cut-off and the lake's counts."""
    from ebbtide.spark.decay_fit import fit_decay
    from ebbtide.spark.lake import read_lake
    from ebbtide.spark.session import spark_session

    with stages(quiet, "training decay in Spark") as stage:
        stage("starting Spark")
        spark = spark_session(master)
        stage("reading the lake")
        events = read_lake(spark, lake)
        when = parse_instant(cutoff, "--cutoff") if cutoff else _after_last(events)
        summary = events.summary(when)
        stage("fitting over partitions of users")
        model = fit_decay(events.valid, cutoff=when)
    return model, when, summary.rows()


def _after_last(events: Any) -> Any:
    """One second after the lake's last valid event (as `after_last_event` for a store)."""
    from datetime import UTC, datetime

    last = events.last_micros()
    if last is None:
        raise EbbtideError(
            f"{events.source} holds no valid event: `ebbtide train --engine spark` needs"
            " rows with the canonical columns (see the Spark section of the README)"
        )
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=last, seconds=1)


def _only_for(model_name: str, family: str, flag: str) -> None:
    if model_name != family:
        raise ConfigError(
            f"{flag} applies to the {family} model only, not {model_name!r}:"
            f" leave it out or train --model {family}"
        )


def _launch_processes(ctx: typer.Context, nproc: int) -> int:
    """Run this `train` again as `nproc` processes on this machine (what torchrun does:
    torch.distributed.run's launcher, a free local port) and return their exit code.

    The processes get the options given here, less the process count; on CPU each gets
    an equal share of the cores unless OMP_NUM_THREADS says otherwise.
    """
    import os
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from ebbtide.models import distributed

    if distributed.launch_env() is not None:
        raise ConfigError(
            "--nproc starts the processes itself, but this one is already one of several"
            " (WORLD_SIZE is set): leave --nproc out under torchrun"
        )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    args = ("-m", "ebbtide.cli", ctx.info_name or "train", *_given_options(ctx, {"nproc"}))
    try:
        elastic_launch(config, entrypoint=sys.executable)(*args)
    except ChildFailedError as failure:
        codes = sorted({error.exitcode for error in failure.failures.values()})
        out().print(f"training failed in {len(failure.failures)} of {nproc} processes (see above)")
        return max(codes) if codes and codes[-1] > 0 else 1
    return 0


def _given_options(ctx: typer.Context, leave_out: set[str]) -> list[str]:
    """The options given on this command line, as arguments again (the rest, defaults and
    environment variables, reach a child process by themselves)."""
    args: list[str] = []
    for param in ctx.command.params:  # Typer's own Option class: not click's, so by kind
        if param.name in leave_out or param.param_type_name != "option":
            continue
        if ctx.get_parameter_source(param.name).name != "COMMANDLINE":
            continue
        value = ctx.params[param.name]
        if param.is_flag:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            args += [param.opts[0], str(value)]
    return args


def _horizons_days(text: str) -> tuple[float, ...]:
    """``1h,1d,7d`` as days."""
    parts = names(text)
    if not parts:
        raise ConfigError(f"--horizons {text!r} names no horizon; use e.g. 1h,1d,7d,30d")
    return tuple(parse_duration(part, "--horizons") / timedelta(days=1) for part in parts)


def _guarantee(privacy: dict) -> str:
    """``(ε = 7.99, δ = 1.2e-06)-DP per user ...``: the guarantee a private fit spent."""
    return (
        f"(ε = {privacy['epsilon']:.3g}, δ = {privacy['delta']:.2g})-DP, unit: one"
        f" {privacy['unit']}'s whole history (target ε {privacy['target_epsilon']:g};"
        f" σ = {privacy['noise_multiplier']:.3g}, C = {privacy['max_grad_norm']:g},"
        f" q = {privacy['sample_rate']:.3g}, {privacy['steps']:,} steps,"
        f" {privacy['accountant']})"
    )


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@app.command()
def score(
    model_dir: ModelDirOption,
    at: Annotated[str, typer.Option(help="Score at this instant (ISO 8601; UTC by default).")],
    db: DbOption = Path("ebbtide.duckdb"),
    horizon: Annotated[str, typer.Option(help="Window after --at: 90m, 24h, 3d, 1w.")] = "1d",
    k: Annotated[int, typer.Option(help="Items to recommend per user.")] = 10,
    out_file: Annotated[
        Path, typer.Option("--out", help="Per-user scores: .parquet, .csv or .json.")
    ] = Path("scores.parquet"),
    per_category_out: Annotated[
        Path | None,
        typer.Option(help="Also write one row per (user, category touched before --at)."),
    ] = None,
    queries_out: Annotated[
        Path | None,
        typer.Option(
            help="decay only: also write which recent searches drive each (user, category)"
            " interest: the top 3 queries with their contribution (per day)."
        ),
    ] = None,
    engine: EngineOption = Engine.LOCAL,
    spark_master: SparkMasterOption = LOCAL_SPARK,
    inputs: InputOption = None,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="neural only: the network's runtime: torch (float32), int8 (dynamic"
            " quantisation) or onnx (onnxruntime; writes model.onnx in --model-dir once)."
        ),
    ] = Runtime.torch,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="neural only: CPU threads of the int8 or onnx runtime."),
    ] = None,
    _debug: DebugOption = False,
) -> None:
    """Score every user with history before --at: return, purchase, interests, items.

    With --engine spark (decay models): return, purchase, top categories and segment,
    written by Spark as a Parquet folder at --out.
    """
    from ebbtide.features.history import UNCATEGORISED, snapshot
    from ebbtide.models.scoring import score_users

    lake = require_lake(engine, inputs)
    when, window = parse_instant(at, "--at"), parse_duration(horizon, "--horizon")
    if engine is Engine.SPARK:
        if queries_out is not None:
            raise ConfigError("--queries-out is written by --engine local only: leave it out")
        _score_in_spark(lake, spark_master, model_dir, when, window, out_file, per_category_out)
        return
    require_store(db)
    model = load_model(model_dir)
    if queries_out is not None:
        _only_for(model.name, "decay", "--queries-out")
    if runtime is not Runtime.torch or threads is not None:
        _only_for(
            model.name, "neural", "--runtime" if runtime is not Runtime.torch else "--threads"
        )
        model.compress(runtime.value, directory=model_dir, threads=threads)
    with EventStore(db, read_only=True) as store:
        history = snapshot(store, at=when)
    users, categories = score_users(model, history, horizon=window, k=k)
    if per_category_out is not None and categories is None:
        raise ConfigError(
            f"the {model.name} model has no per-category interest: leave out --per-category-out"
        )
    write_frame(users, out_file)
    if per_category_out is not None:
        write_frame(categories, per_category_out)
    rows = [("users scored", f"{len(users):,}"), ("at", when.isoformat()), ("horizon", horizon)]
    if queries_out is not None:
        queries = model.explain_queries(history, k=3)
        write_frame(queries, queries_out)
        rows.append(("queries behind interest", f"{len(queries):,} rows in {queries_out}"))
    for column in ("p_return", "p_buy", "expected_return_days"):
        if column in users:
            rows.append((f"mean {column}", f"{users[column].mean():.3f}"))
    if categories is not None and categories["category_id"].eq(UNCATEGORISED).all():
        rows.append(
            ("categories", f"none in the log: interest is per user, as category {UNCATEGORISED}")
        )
    out().print(key_value_table(f"Scores from {model_dir}", rows))


def _score_in_spark(
    lake: list[str],
    master: str,
    model_dir: Path,
    when: Any,
    window: timedelta,
    out_file: Path,
    per_category_out: Path | None,
) -> None:
    """Score every user of a lake with a decay model in Spark, as a Parquet folder."""
    from ebbtide.spark.lake import read_lake
    from ebbtide.spark.scoring import score_events
    from ebbtide.spark.session import spark_session

    if per_category_out is not None:
        raise ConfigError(
            "--per-category-out is not written by --engine spark: leave it out (the top"
            " categories are in the per-user table) or score with --engine local"
        )
    if out_file.suffix.lower() != ".parquet":
        raise ConfigError(
            f"--out {out_file}: --engine spark writes a Parquet folder; name it e.g. scores.parquet"
        )
    model = load_model(model_dir)
    if model.name != "decay":
        raise ConfigError(
            f"--engine spark scores decay models only, and {model_dir} holds a"
            f" {model.name} model: score it with --engine local"
        )
    spark = spark_session(master)
    events = read_lake(spark, lake)
    scored = score_events(model, events.before(when), at=when, horizon=window)
    scored.write.mode("overwrite").parquet(str(out_file))
    written = spark.read.parquet(str(out_file))
    columns = [c for c in ("p_return", "p_buy", "expected_return_days") if c in written.columns]
    means = written.selectExpr("count(*)", *(f"avg({c})" for c in columns)).collect()[0]
    rows = [("users scored", f"{means[0]:,}"), ("at", when.isoformat())]
    rows.append(("horizon", f"{window / timedelta(days=1):g} d"))
    rows += [
        (f"mean {c}", f"{value:.3f}")
        for c, value in zip(columns, means[1:], strict=True)
        if value is not None
    ]
    rows.append(("written to", f"{out_file} (Parquet folder)"))
    out().print(key_value_table(f"Scores from {model_dir} (Spark)", rows))
