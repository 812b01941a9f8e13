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
    """Replace the section headed ``## {title}`` of RESULTS.md, keeping the others."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    start = text.find(f"## {title}\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    RESULTS.write_text(text.rstrip() + "\n\n" + section.rstrip() + "\n")
    print(f"wrote {RESULTS}")
