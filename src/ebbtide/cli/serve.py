"""`ebbtide serve`: the live service on uvicorn (events in, live interest, answers out).

Only option handling lives here; `ebbtide.serve` does the work. With ``--replay`` and no
store, it prepares a store and a `decay` model from the first part of a log (the bundled
sample by default) and replays the rest as a stream, so the monitor page has something to
show on a fresh machine.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from ebbtide.cli.options import DebugOption, err, parse_duration
from ebbtide.errors import ConfigError

app = typer.Typer()

#: Default requests per second and burst allowed to one key.
DEFAULT_RATE = 2_000.0
DEFAULT_BURST = 4_000


@app.command()
def serve(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            help="Event store file (DuckDB); must exist. Posted events are loaded into it."
            " Leave out with --replay to build one from the replayed log's first part.",
        ),
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option("--model-dir", help="A decay model saved by `ebbtide train --model decay`."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; 0.0.0.0 for every interface.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    horizon: Annotated[
        str, typer.Option(help="Default horizon of reads and of the segment watch: 90m, 24h, 1d.")
    ] = "1d",
    keys_file: Annotated[
        Path | None,
        typer.Option(
            "--keys-file",
            help="API keys (from `ebbtide keys create`). Default: STORE.keys.json beside --db.",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="No API keys (every request may do everything); only on 127.0.0.1.",
        ),
    ] = False,
    rate: Annotated[
        float, typer.Option(help="Requests per second allowed to one key (429 past it).", min=0.1)
    ] = DEFAULT_RATE,
    burst: Annotated[int, typer.Option(help="Requests one key may make at once.", min=1)] = (
        DEFAULT_BURST
    ),
    max_body: Annotated[
        int, typer.Option("--max-body", help="Largest request body in bytes (413 past it).", min=1)
    ] = 1 << 20,
    log_dir: Annotated[
        Path | None,
        typer.Option(
            "--log-dir",
            help="Folder of the durable event log. Default: STORE.log beside --db.",
        ),
    ] = None,
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file",
            help="Pseudonymisation key of a pseudonymised store (else EBBTIDE_PSEUDONYM_KEY).",
        ),
    ] = None,
    state: Annotated[
        str,
        typer.Option(
            "--state",
            help="Where the live state lives: memory (this process) or redis://HOST:PORT/DB,"
            " shared by several service processes (each with its own --log-dir).",
        ),
    ] = "memory",
    stream: Annotated[
        str | None,
        typer.Option(
            "--stream",
            help="Also read events from a Redis stream: redis://HOST:PORT/DB/STREAM"
            "[?group=NAME] (consumer group, default ebbtide).",
        ),
    ] = None,
    replay: Annotated[
        bool,
        typer.Option(
            "--replay", help="Replay a log as a live stream (the bundled sample unless --file)."
        ),
    ] = False,
    replay_file: Annotated[
        Path | None,
        typer.Option("--file", help="The log --replay plays (any format --format reads)."),
    ] = None,
    replay_format: Annotated[str, typer.Option("--format", help="Format of --file.")] = "taobao",
    speed: Annotated[
        float, typer.Option(help="Replay this many times faster than real time.", min=0.01)
    ] = 60.0,
    live_days: Annotated[
        float,
        typer.Option(
            "--live-days", help="Days at the end of the replayed log that are streamed.", min=0.01
        ),
    ] = 1.0,
    _debug: DebugOption = False,
) -> None:
    """Serve live interest over HTTP: POST /v1/events, GET /v1/users/{id}/scores, /monitor.

    Events are acknowledged once durable (an fsync-ed log), update each user's state at
    once, and reach the store within a second. Reads answer from the state in about a
    millisecond. OpenAPI docs at /docs, metrics at /metrics.
    """
    import uvicorn

    from ebbtide.serve.app import create_app
    from ebbtide.serve.replay import prepare_replay
    from ebbtide.serve.replay import replay as play
    from ebbtide.serve.security import Guard, KeyRing, RateLimiter, check_bind
    from ebbtide.serve.service import Clock, Service, ServiceConfig

    check_bind(host, auth_enabled=not no_auth)
    horizon_days = parse_duration(horizon, "--horizon").total_seconds() / 86_400
    with contextlib.ExitStack() as stack:
        clock = None
        events = []
        if replay and db is None:
            from ebbtide.datasets import taobao_sample_path

            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ebbtide-")))
            source = replay_file or taobao_sample_path()
            err().print(f"Preparing the replay of {source.name}: store and decay model ...")
            prepared = prepare_replay(source, replay_format, folder, live_days=live_days)
            db, model_dir = prepared.db, prepared.model_dir
            clock, events = Clock(prepared.start, speed), prepared.events
        if db is None or model_dir is None:
            raise ConfigError(
                "serve needs --db STORE and --model-dir DIR (a decay model), or --replay to"
                " watch it work on the bundled sample"
            )
        if replay and not events:
            raise ConfigError("--replay with --db replays nothing yet: leave out --db")
        guard = Guard(
            None if no_auth else KeyRing.load(keys_file or _keys_beside(db), must_exist=True),
            RateLimiter(rate=rate, burst=burst),
        )
        config = ServiceConfig(
            db=db,
            model_dir=model_dir,
            log_dir=log_dir,
            horizon_days=horizon_days,
            key_file=key_file,
            state_url=_state_url(state),
        )
        service = Service(config, clock)
        background = [lambda: play(service, events)] if events else []
        if stream is not None:
            from ebbtide.serve.stream import StreamConsumer

            background.append(StreamConsumer(service, stream).run)
        application = create_app(service, guard, max_body_bytes=max_body, background=background)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        err().print(f"Serving on http://{host}:{port} (monitor: /monitor, docs: /docs)")
        uvicorn.run(application, host=host, port=port, access_log=False, log_level="warning")


def _state_url(state: str) -> str | None:
    if state == "memory":
        return None
    if state.startswith(("redis://", "rediss://", "unix://")):
        return state
    raise ConfigError(f"--state {state!r}: memory or a Redis URL, redis://HOST:PORT/DB")


def _keys_beside(db: Path) -> Path:
    return db.with_name(db.name + ".keys.json")
