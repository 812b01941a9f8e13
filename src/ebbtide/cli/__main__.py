"""``python -m ebbtide.cli``: the same as the installed ``ebbtide`` command."""

if __name__ == "__main__":
    from ebbtide.cli.main import app

    app(prog_name="ebbtide")
