"""`ebbtide keys create`, `list` and `revoke`: the API keys of the live service.

A key's token is printed once, by `create`, on stdout (so it can go straight into a file or
a secret store); the keys file keeps only its SHA-256 (`ebbtide.serve.security`). The file
is ``--keys-file``, or ``STORE.keys.json`` beside the event store ``--db``. A running
service rereads it within a second, so created and revoked keys count without a restart.
Like every command module, it only turns options into library calls; `ebbtide.cli.main`
adds the group to the app as `keys`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ebbtide.cli.options import DebugOption, JsonOption, err, out, require_store, write_json
from ebbtide.errors import ConfigError
from ebbtide.serve.security import KeyInfo, KeyRing, Scope

app = typer.Typer(
    help="API keys of the live service: create one (its token is shown once), list, revoke.",
    no_args_is_help=True,
)

#: The store `--db` means when neither it nor `--keys-file` is given (as in other commands).
DEFAULT_DB = Path("ebbtide.duckdb")

KeysFileOption = Annotated[
    Path | None,
    typer.Option(
        "--keys-file",
        help="API keys file (JSON; holds hashes, never tokens). Default: STORE.keys.json"
        " beside the --db store.",
    ),
]
KeysDbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="Event store file (DuckDB); must exist. Its keys are in STORE.keys.json beside it."
        " Default: ebbtide.duckdb, unless --keys-file is given.",
    ),
]


def keys_path(keys_file: Path | None, db: Path | None) -> Path:
    """The keys file: `keys_file`, else ``<db>.keys.json`` beside an existing store."""
    if keys_file is not None:
        if db is not None:
            raise ConfigError("give --keys-file or --db, not both: --db only names the keys file")
        return keys_file
    store = db if db is not None else DEFAULT_DB
    require_store(store)
    return store.with_name(store.name + ".keys.json")


def _where(keys_file: Path | None, db: Path | None) -> str:
    """The option that names the keys file, to repeat in a suggested command."""
    if keys_file is not None:
        return f" --keys-file {keys_file}"
    return f" --db {db}" if db is not None else ""


def _describe(info: KeyInfo) -> str:
    return f"{info.key_id} {info.name!r} ({', '.join(info.scope_names())})"


@app.command()
def create(
    name: Annotated[
        str,
        typer.Argument(
            help="Who uses the key (a label, shown by `ebbtide keys list`): scorer, ingest-bot."
        ),
    ],
    scopes: Annotated[
        list[Scope],
        typer.Option(
            "--scope",
            "-s",
            help="What the key may do; repeat for more: events:write (post events),"
            " scores:read (read scores), admin (everything).",
        ),
    ],
    keys_file: KeysFileOption = None,
    db: KeysDbOption = None,
    _debug: DebugOption = False,
) -> None:
    """Create a key and print its token once, on stdout; the file keeps only its hash."""
    path = keys_path(keys_file, db)
    ring = KeyRing.load(path)
    token, info = ring.create(name, scopes)
    ring.save()
    typer.echo(token)
    err().print(
        f"Created API key {_describe(info)} in {path}. The token above is shown only now (the"
        " file keeps its hash): put it in the client's secret store. Clients send it as"
        " 'Authorization: Bearer TOKEN'.",
        highlight=False,
        markup=False,
    )


@app.command("list")
def list_keys(
    keys_file: KeysFileOption = None,
    db: KeysDbOption = None,
    json_file: JsonOption = None,
    _debug: DebugOption = False,
) -> None:
    """List the keys: id, name, scopes, creation time (UTC) and whether revoked. No secrets."""
    path = keys_path(keys_file, db)
    keys = KeyRing.load(path).list()
    write_json(json_file, [info.to_dict() for info in keys])
    console = out()
    if not keys:
        console.print(
            f"No API keys in {path} yet; create one with"
            f" `ebbtide keys create NAME --scope scores:read{_where(keys_file, db)}`.",
            highlight=False,
            markup=False,
        )
        return
    revoked = sum(info.revoked for info in keys)
    table = Table(title=Text(f"API keys in {path}: {len(keys)} ({revoked} revoked)"))
    for column in ("key id", "name", "scopes", "created (UTC)", "status"):
        table.add_column(column, no_wrap=True)
    for info in keys:
        table.add_row(
            info.key_id,
            Text(info.name),
            ", ".join(info.scope_names()),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            "revoked" if info.revoked else "active",
        )
    console.print(table)


@app.command()
def revoke(
    key_id: Annotated[
        str, typer.Argument(help="Id of the key (the 8 hex digits after ebt_; see `keys list`).")
    ],
    keys_file: KeysFileOption = None,
    db: KeysDbOption = None,
    _debug: DebugOption = False,
) -> None:
    """Revoke a key: a running service refuses it within a second. It stays listed."""
    path = keys_path(keys_file, db)
    ring = KeyRing.load(path)
    before = next((info for info in ring.list() if info.key_id == key_id), None)
    info = ring.revoke(key_id)
    if before is not None and before.revoked:
        out().print(
            f"API key {_describe(info)} was already revoked; nothing changed.",
            highlight=False,
            markup=False,
        )
        return
    ring.save()
    out().print(
        f"Revoked API key {_describe(info)} in {path}; a running service refuses it within a"
        " second.",
        highlight=False,
        markup=False,
    )
