"""No message, note or help text suggests a flag the command it names does not have.

Every string literal under src/ebbtide is read (errors, notes, warnings and help all are):
a flag after a command (`ebbtide plan --order-value`, `campaign uplift --learners`) must be
one of that command's options; any other flag must be an option of a command in the same CLI
module (in `ebbtide/cli/`) or of some command (elsewhere in the library). The report's notes
are also read from a real report, where no flag at all belongs to anything but `report`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer

import ebbtide
from ebbtide.synthetic import SynthConfig, generate, write_taobao_csv

SRC = Path(ebbtide.__file__).parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _command_options(app) -> dict[str, set[str]]:
    """Options of every leaf command, by full name ("campaign uplift")."""
    found: dict[str, set[str]] = {}
    stack = [("", typer.main.get_command(app))]
    while stack:
        prefix, command = stack.pop()
        children = getattr(command, "commands", None)
        if children is None:
            names = {"--help"}
            for param in command.params:
                names.update(getattr(param, "opts", []), getattr(param, "secondary_opts", []))
            found[prefix.strip()] = {n for n in names if n.startswith("--")}
        else:
            stack += [(f"{prefix} {name}", child) for name, child in children.items()]
    return found


def _strings(path: Path) -> list[tuple[int, str]]:
    """Each string literal of a file (f-string values shown as X), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "X" for part in node.values
            )
            found.append((node.lineno, text))
    return found


def problems_in(text: str, options: dict[str, set[str]], own: set[str]) -> list[str]:
    """Flags in `text` that the command named before them (or else `own`) does not have."""
    commands = sorted(options, key=len, reverse=True)  # "campaign uplift" before "campaign"
    command = "|".join(re.escape(name) for name in commands)
    named = re.compile(rf"^(?:ebbtide )?({command})\b(.*)$", re.S)
    bad = []

    def check(flags_text: str, allowed: set[str], who: str) -> None:
        bad.extend(f"{flag} ({who})" for flag in FLAG.findall(flags_text) if flag not in allowed)

    rest = text
    for span in re.findall(r"`([^`]*)`", text):
        match = named.match(span)
        if match:
            check(match.group(2), options[match.group(1)], match.group(1))
            rest = rest.replace(f"`{span}`", " ", 1)
    for match in re.finditer(rf"\bebbtide ({command})\b([^;`]*)", rest):
        check(match.group(2), options[match.group(1)], match.group(1))
    rest = re.sub(rf"\bebbtide ({command})\b([^;`]*)", " ", rest)
    check(rest, own, "this command")
    return bad


def test_every_flag_a_string_mentions_exists(cli) -> None:
    options = _command_options(cli.app)
    root = {opt for param in typer.main.get_command(cli.app).params for opt in param.opts}
    anywhere = set().union(root, *options.values())
    by_module = {
        module: set().union(*(options[name] for name in _defined_in(module)))
        for module in ("store", "models", "evaluate", "activate", "campaign", "report")
    }
    bad = []
    for path in sorted(SRC.rglob("*.py")):
        own = by_module.get(path.stem, anywhere) if path.parent.name == "cli" else anywhere
        if path.parent.name == "cli" and path.stem in ("main", "options", "__init__"):
            own = anywhere
        for line, text in _strings(path):
            bad += [f"{path.relative_to(SRC)}:{line}: {p}" for p in problems_in(text, options, own)]
    assert bad == []


def _defined_in(module: str) -> list[str]:
    """Full names of the commands a module of ebbtide/cli defines."""
    import importlib

    commands = importlib.import_module(f"ebbtide.cli.{module}").app.registered_commands
    group = "campaign " if module == "campaign" else ""
    return [group + (c.name or c.callback.__name__.replace("_", "-")) for c in commands]


def test_the_checker_finds_a_flag_the_named_command_lacks(cli) -> None:
    options = _command_options(cli.app)
    report = options["report"]
    assert problems_in("pass --order-value to plan coupons", options, report) == [
        "--order-value (this command)"
    ]
    assert problems_in("see `ebbtide plan --order-value`", options, report) == []
    assert problems_in("run ebbtide train --until X", options, report) == ["--until (train)"]
    assert problems_in("`campaign uplift --learners t,x`", options, report) == []


@pytest.mark.slow
def test_the_reports_notes_name_only_real_next_steps(cli, tmp_path: Path) -> None:
    """A log without prices: the plan leaves coupons out and says how to put them back."""
    log = generate(SynthConfig(users=40, days=5.0, categories=6, items_per_category=8, seed=2))
    csv, db, page = tmp_path / "log.csv", tmp_path / "s.duckdb", tmp_path / "r.html"
    write_taobao_csv(log, csv)
    cli.ok("ingest", str(csv), "--db", str(db), "--quiet")
    cli.ok("report", "--db", str(db), "--out", str(page), "--models", "decay", "--quiet")
    html = page.read_text(encoding="utf-8")
    notes = [
        re.sub(r"<[^>]+>", "", item)
        for block in re.findall(r'<ul class="notes">(.*?)</ul>', html, re.S)
        for item in re.findall(r"<li>(.*?)</li>", block, re.S)
    ]
    priced = [note for note in notes if "coupon redemption costs are unknown" in note]
    assert len(priced) == 1, notes  # shown once, by the plan section
    options = _command_options(cli.app)
    for note in notes:
        assert problems_in(note, options, options["report"]) == [], note
        assert not re.search(r"\bpass [a-z]+_[a-z_]+\b", note), note  # a Python argument
    assert "`ebbtide plan --order-value`" in priced[0]
