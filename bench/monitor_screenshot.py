"""The README's picture of the live monitor, taken from a real run.

Starts ``ebbtide serve --replay --no-auth --speed 600`` (the bundled sample's last day
streamed 600 times faster than real time), opens /monitor in Debian's headless Chromium,
lets it watch for a while and saves a screenshot:

    python bench/monitor_screenshot.py [--out docs/monitor.png] [--watch 20]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: As tests/report/test_browser.py: Chromium on a closed network, possibly as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, timeout: float) -> None:
    """Until /ready answers 200 (the replay's store and model are built first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped (exit {server.returncode})")
        try:
            with urllib.request.urlopen(f"{base}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


def shrink(png: Path) -> None:
    """Down to a palette of 256 colours: a third of the size, no visible change."""
    from PIL import Image

    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "monitor.png")
    parser.add_argument("--watch", type=float, default=20.0, help="seconds on the page")
    parser.add_argument("--speed", type=float, default=600.0)
    parser.add_argument("--horizon", default="6h", help="the projection shown: 1h, 6h, 1d, 7d")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("Chromium is not installed: apt install chromium")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ebbtide.cli", "serve", "--replay", "--no-auth"]
    command += ["--speed", str(args.speed), "--port", str(port)]
    server = subprocess.Popen(command)
    try:
        wait_ready(base, server, timeout=300)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{base}/monitor")
            page.select_option("#horizon", args.horizon)
            time.sleep(args.watch)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
        shrink(args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"{args.out}: {args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
