"""Fixtures of the real-browser tests: Debian's Chromium driven by Playwright, the output folder kept for CI.

Skipped (with the reason) when Playwright or Chromium is missing: `pip install -e ".[browser]"` and
`apt-get install -y chromium` (what `.ci/run` does). Never `playwright install`: the system Chromium is used.
"""

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    candidates = [os.environ.get("CHROMIUM", ""), *CHROMIUM_PATHS, shutil.which("chromium") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="session")
def browser_out() -> Path:
    """outputs/browser (or $BROWSER_TEST_OUT): emptied at the start, kept afterwards as CI artifacts."""
    out = Path(os.environ.get("BROWSER_TEST_OUT") or REPO_ROOT / "outputs" / "browser").resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright missing: pip install -e '.[browser]'")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium not found (apt-get install -y chromium, or set CHROMIUM=/path/to/chromium)")
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()
