"""Shared by the bench scripts: the machine line and writing one section of RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def machine() -> str:
    """``x86_64, 2 cores, Python 3.11.7``: enough to tell two result files apart."""
    return f"{platform.machine()}, {cpus()} cores, Python {platform.python_version()}"


def write_section(title: str, section: str) -> None:
    """Replace the section headed ``## {title}`` of RESULTS.md in place, or append it."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    section = section.rstrip() + "\n"
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)
    print(f"wrote {RESULTS}")


def add_settings_option(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): a neural setting for an ablation."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="neural setting for an ablation, e.g. --set rate_lr_scale=10 (repeatable)",
    )


def parse_settings(pairs: list[str]) -> dict:
    """``["item_weight=0.2"]`` → ``{"item_weight": 0.2}`` (JSON values, else strings)."""
    out = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def settings_flags(pairs: list[str]) -> str:
    """The ``--set`` flags as typed, for the command line written into RESULTS.md."""
    return "".join(f" --set {pair}" for pair in pairs)


def median_range(rows: list[dict], key: str, fmt: str) -> str:
    """``median [min–max]`` of ``row[key]`` over rows that have it (``–`` when none)."""
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "–"
    text = fmt.format(statistics.median(values))
    if len(values) > 1:
        text += f" [{fmt.format(min(values))}–{fmt.format(max(values))}]"
    return text
