"""The `ebbtide` command: a thin shell over the library.

Options become library arguments, the library does the work, Rich draws progress on
stderr and results on stdout (so ``ebbtide stats > stats.txt`` stays clean).

This module builds the app from the command modules, each of which only defines its
commands on a Typer of its own (importing one registers nothing elsewhere), and is the one
place where an `EbbtideError` becomes one ``Error: ...`` line on stderr and exit code 1;
``--debug``, before or after the command, adds the traceback. Other exceptions are bugs and
keep their traceback.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from ebbtide.cli import activate, campaign, evaluate, keys, models, report, serve, store
from ebbtide.cli.options import DEBUG_KEY, DebugOption, err
from ebbtide.errors import EbbtideError


def show_error(exc: EbbtideError, *, debug: bool) -> None:
    """One ``Error: ...`` line (the message says what to do next); the traceback on --debug."""
    console = err()
    if debug:
        console.print_exception(show_locals=False)
    console.print(f"[bold red]Error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)


class _Group(TyperGroup):
    """The root command group: runs the chosen command and reports library errors."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EbbtideError as exc:
            show_error(exc, debug=bool(ctx.meta.get(DEBUG_KEY)))
            raise typer.Exit(code=1) from None


app = typer.Typer(
    name="ebbtide",
    cls=_Group,
    help="Interest decay, return prediction and re-activation planning from behaviour logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version() -> str:
    try:
        return version("ebbtide")
    except PackageNotFoundError:  # run from a source tree that was never installed
        from ebbtide import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"ebbtide {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    _debug: DebugOption = False,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:  # fmt: skip
    """ebbtide: who is drifting away, and what would bring them back."""


# Order of the commands in --help: the path of the data through the library.
for _commands in (store.app, models.app, evaluate.app, activate.app, report.app, serve.app):
    app.add_typer(_commands)
app.add_typer(campaign.app, name="campaign")
app.add_typer(keys.app, name="keys")
