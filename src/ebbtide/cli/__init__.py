"""The `ebbtide` command line: `app`, built in `ebbtide.cli.main` from one module per group.

`store` (ingest, stats, quarantine, forget, synth), `models` (train, score), `evaluate`,
`activate` (segments, plan), `campaign` (campaign analyze, uplift, synth), `keys` (keys
create, list, revoke) and `report` (report, demo); `options` holds what they share. Each
imports on its own and defines its commands on a Typer of its own; only `main` puts them
together.

The app module is `main`, not `app`: a submodule named like the package's `app` attribute
(the console script's entry point, ``ebbtide.cli:app``) would shadow it. `app` is loaded on
first use, so importing one command module does not import the others.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """`from ebbtide.cli import app` (the console script's entry point) loads the app."""
    if name == "app":
        from ebbtide.cli.main import app

        globals()["app"] = app
        return app
    raise AttributeError(f"module 'ebbtide.cli' has no attribute {name!r}")
