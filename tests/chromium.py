"""Headless Chromium for the tests that open a page with the network cut off (the offline `dvc plots show` page
and the study's self-contained HTML)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = next(
    filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"])), None
)


def chromium_dom(page: Path, tmp_path: Path, *, proxy: str = "http://127.0.0.1:9") -> str:
    """The DOM of `page` after loading it in headless Chromium with no network: every host name fails to resolve and
    every other request goes to `proxy` (by default a closed port; `--dump-dom`, after a virtual-time budget for
    scripts to run)."""
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            # No network: every host name fails to resolve and every other request goes to a closed port.
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # the proxy below stays reachable
            f"--proxy-server={proxy}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
