"""Drive the Airflow UI of the running local stack in a real browser: Debian's Chromium through Playwright.

Nothing is downloaded at run time (no ``playwright install``): Playwright for Python (pinned in
requirements-dev.txt) drives the system's ``/usr/bin/chromium`` (Debian's ``chromium`` package, installed by
``scripts/install-system-tools.sh --with-test-extras``, which ``make test`` runs). The browser gets a HOME of its
own under the test's tmp dir (Chromium writes ``~/.config/chromium`` and ``~/.cache`` otherwise), is closed at the
end whatever happened, and the test checks that none of its processes is left.

Each step of the test saves a screenshot into one directory (:class:`Shots`); a step that fails saves one of every
open page and names it in the failure message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from dev import stack
from tests.leakcheck import processes

CHROMIUM = "/usr/bin/chromium"  # Debian's launcher script; it execs /usr/lib/chromium/chromium
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-crash-reporter", "--no-default-browser-check"]
VIEWPORT = {"width": 1400, "height": 1000}
# Two busy cores (other test work, the stack itself): a click or a page may take long, never forever.
ACTION_TIMEOUT_MS = 60_000
NAVIGATION_TIMEOUT_MS = 120_000

T = TypeVar("T")


def require_chromium() -> None:
    """Fail (never skip) when the browser or Playwright is missing, saying how to install them."""
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"{CHROMIUM} is missing: the browser test drives Debian's chromium package; run "
                    "scripts/install-system-tools.sh --with-test-extras (make test does), or "
                    "apt-get install chromium", pytrace=False)
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail("Playwright for Python is missing: `make venv` installs it from requirements-dev.txt "
                    "(no browser download is needed: the test uses /usr/bin/chromium)", pytrace=False)


# --- screenshots and steps ------------------------------------------------------------------------------------


class Shots:
    """Numbered screenshots of the steps in one directory; a failed step adds one of each open page."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []
        self.pages: list[Any] = []  # the open pages, screenshotted when a step fails

    def take(self, page, name: str, *, full_page: bool = False) -> Path:
        path = self.dir / f"{len(self.taken) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        self.taken.append(path)
        return path

    def _on_failure(self, step: str) -> list[str]:
        saved = []
        for n, page in enumerate(p for p in self.pages if not p.is_closed()):
            path = self.dir / f"FAILED-{_slug(step)}-{n}.png"
            try:
                page.screenshot(path=str(path), full_page=True, timeout=30_000)
                saved.append(f"{path} ({page.url})")
            except Exception as exc:  # the browser itself may be what failed
                saved.append(f"(no screenshot of {page.url}: {exc.__class__.__name__}: {str(exc)[:200]})")
        return saved

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """One step of the path: printed with its duration; on failure, the screenshots' paths in the error."""
        started = time.monotonic()
        print(f"[browser] {name} ...", flush=True)
        try:
            yield
        except Exception as exc:
            saved = self._on_failure(name)
            raise AssertionError(f"step '{name}' failed after {time.monotonic() - started:.0f} s: "
                                 f"{exc.__class__.__name__}: {exc}\n  screenshots of the pages: "
                                 f"{'; '.join(saved) or 'none open'}\n  every step's screenshot: {self.dir}") from exc
        print(f"[browser] {name}: done in {time.monotonic() - started:.0f} s", flush=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:60]


# --- the browser ----------------------------------------------------------------------------------------------


def browser_processes(home: Path) -> dict[tuple[int, int], str]:
    """Live processes of the browser started with ``home``: those whose environment names that HOME (the browser
    and its crash handlers) and their descendants (zygotes, renderers, GPU and utility processes, which rewrite
    their command line and environment)."""
    table = processes()
    by_pid = {p.pid: p for p in table.values()}
    roots = {p.pid for p in table.values() if p.env.get("HOME") == str(home)}
    found = {}
    for proc in table.values():
        seen, current = set(), proc
        while current is not None and current.pid not in seen:
            if current.pid in roots:
                found[proc.key] = proc.describe()
                break
            seen.add(current.pid)
            current = by_pid.get(current.ppid)
    return found


@contextmanager
def chromium(home: Path) -> Iterator[Any]:
    """Headless Debian Chromium through Playwright, with ``home`` as its HOME; closed on exit, and the test fails
    naming any of its processes still running 30 s after the close."""
    from playwright.sync_api import sync_playwright

    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    failed, started = False, {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, env=env,
                                         timeout=NAVIGATION_TIMEOUT_MS)
            try:
                yield browser
            finally:
                started = browser_processes(home)
                browser.close()
    except BaseException:
        failed = True
        raise
    finally:
        def left() -> dict[tuple[int, int], str]:
            alive = processes(env=False)
            return {k: d for k, d in {**started, **browser_processes(home)}.items() if k in alive}

        gone = wait_for(lambda: not left(), 30, every=1)
        remaining = {} if gone else left()
        shutil.rmtree(home, ignore_errors=True)
        if remaining:
            message = "Chromium processes still run 30 s after the browser was closed: " + "; ".join(
                remaining.values())
            if not failed:
                raise AssertionError(message)
            print(f"[browser] {message}", flush=True)  # the test's own failure is the one to see


def new_context(browser, shots: Shots):
    """A fresh browser context (its own cookies: one user each) whose pages ``shots`` knows."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    context.on("page", lambda page: shots.pages.append(page))
    return context


def log_in(context, url: str, user: str, password: str):
    """A page logged in to the Airflow UI as ``user`` through SimpleAuthManager's sign-in form."""
    page = context.new_page()
    page.goto(f"{url}/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(url) + r"/?$"))
    page.get_by_role("button", name="Browse").wait_for()  # the app's navigation is there: signed in
    return page


def open_required_actions(page) -> None:
    """Browse → Required Actions, from the navigation bar."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="Required Actions").click()
    page.wait_for_url(re.compile(r"/required_actions$"))


def review_drawer(page, run_id: str):
    """Open the review drawer of ``run_id``'s request in the Required Actions list; returns the drawer."""
    row = page.get_by_role("row").filter(has_text=run_id)
    row.get_by_role("button", name="Open Review Drawer").click()
    drawer = page.get_by_role("dialog", name="Required Actions")
    drawer.get_by_role("button", name="Approve").wait_for()
    return drawer


def toast(page, text: str | re.Pattern):
    """The notification (Chakra toast, role status) reading ``text``."""
    return page.get_by_role("region", name=re.compile("^Notifications")).get_by_role("status", name=text)


def settled(locator):
    """``locator`` once it is visible and no longer moving (a toast sliding in), hovered: a Chakra toast stays
    while the pointer is on it, so the screenshot that follows shows it."""
    locator.hover()
    return locator


def scroll_to_top(locator) -> None:
    """Scroll ``locator``'s scroll container so that it is at the top (for a screenshot of what follows it)."""
    locator.wait_for()
    locator.evaluate("element => element.scrollIntoView({block: 'start'})")


def run_state_badge(page):
    """The state badge in the header of a DAG run's page (Running, Success, Failed)."""
    return page.get_by_test_id("header-card").get_by_test_id("state-badge")


def table_with_header(scope, header: str):
    """The table in ``scope`` (a locator) that has a column named ``header``."""
    return scope.get_by_role("table").filter(has=scope.page.get_by_role("columnheader", name=header, exact=True))


def table_rows(table) -> list[list[str]]:
    """The body rows of a rendered table, as the text of their cells."""
    return [[c.strip() for c in row.get_by_role("cell").all_inner_texts()]
            for row in table.get_by_role("row").all() if row.get_by_role("cell").count()]


# --- the REST API, to wait and to check (the steps themselves are done in the browser) ------------------------


def wait_for(check: Callable[[], T], timeout: float, every: float = 5) -> T | None:
    """``check()`` until it returns something true or ``timeout`` seconds passed (then None)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found or None
        time.sleep(every)


class Api:
    """Reads from the stack's REST API as admin; a busy api-server (two shared cores) is asked again."""

    def __init__(self, state: stack.Stack) -> None:
        self.state = state
        self._token: str | None = None

    def _call(self, fn: Callable[[str], T], attempts: int = 6) -> T:
        for attempt in range(attempts):
            try:
                if self._token is None:
                    self._token = stack.airflow_token(self.state.ui, "admin", self.state.users["admin"])
                return fn(self._token)
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    self._token = None  # expired
                elif exc.code < 500 or attempt == attempts - 1:
                    raise
            except (TimeoutError, urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                if attempt == attempts - 1:
                    raise
            time.sleep(5)
        raise AssertionError("unreachable")

    def get(self, path: str) -> dict:
        return self._call(lambda token: stack.api(self.state.ui, token, "GET", path))

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")

    def run_ids(self, dag_id: str) -> set[str]:
        return {r["dag_run_id"] for r in self.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, list[str | None]]:
        """{task_id: [state of each instance]} of a run."""
        states: dict[str, list[str | None]] = {}
        for ti in self._call(lambda token: stack.task_instances(self.state.ui, token, dag_id, run_id)):
            states.setdefault(ti["task_id"], []).append(ti["state"])
        return states

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        return sorted(f"{t}: {', '.join(str(s) for s in states)}"
                      for t, states in self.task_states(dag_id, run_id).items()
                      if any(s in ("failed", "upstream_failed") for s in states))

    def pending_request(self, dag_id: str, run_id: str) -> dict | None:
        """The run's human-in-the-loop request that has no answer yet, once its task waits for input."""
        found = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/hitlDetails")["hitl_details"]
        waiting = [d for d in found if not d["response_received"]]
        if not waiting:
            return None
        states = self.task_states(dag_id, run_id).get(waiting[0]["task_instance"]["task_id"], [])
        return waiting[0] if states == ["awaiting_input"] else None
