"""Drive the Airflow UI of a running local stack in a real browser: Debian's Chromium through Playwright.

Nothing is downloaded at run time (no ``playwright install``): Playwright's Python package drives the system's
``/usr/bin/chromium`` (package ``chromium``, installed by scripts/install-system-tools.sh --with-test-extras).
Each step saves a screenshot into a directory the test names and prints.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


def require_chromium() -> None:
    """Fail (never skip) when the browser or Playwright is missing, saying how to install them."""
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: the browser test needs Debian's chromium package; run "
                    "scripts/install-system-tools.sh --with-test-extras (make test does)", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is missing: make venv installs it from requirements-dev.txt",
                    pytrace=False)


class Shots:
    """Numbered screenshots of the steps, kept in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, page, name: str, *, full_page: bool = False) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        return path


@contextmanager
def browser(profile_dir: Path) -> Iterator:
    """A headless Chromium with a fresh profile (user-data-dir); closed, with its processes, on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


def log_in(context, url: str, user: str, password: str):
    """A page logged in to the Airflow UI as ``user`` (SimpleAuthManager's login form)."""
    page = context.new_page()
    page.goto(f"{url}/auth/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(url) + r"/?$"), timeout=60_000)
    return page


def choose(page, field: str, option: str) -> None:
    """Pick ``option`` in the trigger form's select (single or multi) for the param ``field``."""
    page.locator(f"#element_{field}").click()
    page.get_by_role("option", name=option, exact=True).click()
