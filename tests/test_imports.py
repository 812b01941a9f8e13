"""Every module of ebbtide imports on its own, as the first ebbtide module of a process.

Why: an import cycle only fails for the module a process happens to import first (once,
`python -c "import ebbtide.cli_activate"` failed while `import ebbtide.cli` worked), and a
module that relies on another having registered something works only after it. So each
module is imported in a process where no ebbtide module has been loaded yet.

How, quickly: a fresh interpreter loads the third-party packages ebbtide depends on (the
bulk of the import time: a fresh interpreter per module took about 150 s here), but nothing
of ebbtide, then forks one child per module, which imports it and nothing else. Where
`os.fork` does not exist each module gets a fresh interpreter instead.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import ebbtide

SRC = Path(ebbtide.__file__).resolve().parents[1]

#: Top-level packages only: their submodules (sklearn.ensemble, matplotlib.pyplot ...) are
#: still imported by the child that needs them, so a missing import is not hidden.
DEPENDENCIES = (
    "duckdb", "jinja2", "matplotlib", "numpy", "pandas", "pyarrow", "rich", "scipy",
    "sklearn", "torch", "typer",
)  # fmt: skip

_CHILDREN = r"""
import importlib, os, sys, traceback
sys.path.insert(0, SRC)
for name in DEPENDENCIES:
    importlib.import_module(name)
assert not any(m == "ebbtide" or m.startswith("ebbtide.") for m in sys.modules)
running, failed = {}, []
def reap():
    pid, status = os.wait()
    if os.waitstatus_to_exitcode(status) != 0:
        failed.append(running[pid])
    del running[pid]
for module in MODULES:
    if len(running) >= WORKERS:
        reap()
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException:
            sys.stderr.write(f"--- {module}\n{traceback.format_exc()}")
            sys.stderr.flush()
            os._exit(1)
        os._exit(0)
    running[pid] = module
while running:
    reap()
print("FAILED:" + ",".join(sorted(failed)))
"""


def _modules() -> list[str]:
    """Every module and package under src/ebbtide, found without importing any of them."""
    found = ["ebbtide"]
    stack = [(Path(ebbtide.__file__).parent, "ebbtide.")]
    while stack:
        folder, prefix = stack.pop()
        for info in pkgutil.iter_modules([str(folder)], prefix):
            found.append(info.name)
            if info.ispkg:
                stack.append((folder / info.name.rsplit(".", 1)[1], info.name + "."))
    return sorted(found)


def test_the_module_list_is_complete() -> None:
    modules = _modules()
    assert {"ebbtide.cli.main", "ebbtide.cli.activate", "ebbtide.models.neural"} <= set(modules)
    files = [p for p in Path(ebbtide.__file__).parent.rglob("*.py")]
    assert len(modules) == len(files)


def test_every_module_imports_on_its_own() -> None:
    modules = _modules()
    if not hasattr(os, "fork"):  # pragma: no cover - not on the platforms we test on
        failed = [
            module
            for module in modules
            if subprocess.run(
                [sys.executable, "-c", f"import {module}"],
                env={**os.environ, "PYTHONPATH": str(SRC)},
                capture_output=True,
                timeout=120,
            ).returncode
        ]
        assert failed == []
        return
    script = (
        f"SRC = {str(SRC)!r}\nDEPENDENCIES = {DEPENDENCIES!r}\nMODULES = {modules!r}\n"
        f"WORKERS = {max(2, min(4, os.cpu_count() or 2))}\n" + _CHILDREN
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "FAILED:", done.stderr[-5000:]
