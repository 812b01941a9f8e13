"""Shared by the bench scripts: the machine line and writing one section of RESULTS.md."""

from __future__ import annotations

import os
import platform
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
