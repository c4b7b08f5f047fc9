"""BuildSystemHook: the build system (Peridot's yumrepofs) as the pipeline talks to it.

Repo URLs come from RELENG_PERIDOT_URL and the profile's project id. ``repomd.xml`` is fetched over
HTTP(S), following at most ``MAX_REDIRECTS`` redirects; connection errors, timeouts and 5xx/429
answers are retried with a growing pause, and the error after the last attempt names the URL.
dnf downloads the packages itself; this hook only answers "what does the build system serve now".
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request

from airflow.sdk import BaseHook

from releng.core import dnf
from releng.core.settings import settings

MAX_REDIRECTS = 5
RETRIES = 3
BACKOFF_SECONDS = 1.0
TIMEOUT_SECONDS = 60.0
RETRIABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class BuildSystemError(OSError):
    """The build system did not serve a URL (down, refusing, or an error status); the message names the URL."""

    def __init__(self, message: str, *, url: str, status: int | None = None, retriable: bool = True):
        super().__init__(message)
        self.url = url
        self.status = status
        self.retriable = retriable


class _LimitedRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS


class BuildSystemHook(BaseHook):
    """Client of the build system: repo URLs and ``repomd.xml`` fetches with redirects and retries.

    :param base_url: the projects endpoint (``https://yumrepofs.build.resf.org/v1/projects``); default
        RELENG_PERIDOT_URL.
    :param retries: attempts per request (at least 1).
    :param backoff: seconds before the second attempt, doubled before each later one.
    :param timeout: seconds to wait for each answer.
    """

    hook_name = "Build system (yumrepofs)"

    def __init__(self, base_url: str | None = None, *, retries: int = RETRIES, backoff: float = BACKOFF_SECONDS,
                 timeout: float = TIMEOUT_SECONDS, **kwargs):
        super().__init__(**kwargs)
        self.base_url = (base_url if base_url is not None else settings().peridot_url).rstrip("/")
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_LimitedRedirects())

    def repo_url(self, project_id: str, repo: str, arch: str, kind: str = "os", *, hashed: bool = False) -> str:
        """``<base>/<project>/repo/[hashed-]<repo>/<arch>[-debug]|src``."""
        return dnf.yumrepofs_url(self.base_url, project_id, repo, arch, kind, hashed=hashed)

    def fetch(self, url: str) -> bytes:
        """The body at ``url`` after redirects; :class:`BuildSystemError` naming ``url`` once retries are spent."""
        problem = ""
        for attempt in range(1, self.retries + 1):
            try:
                with self._opener.open(url, timeout=self.timeout) as answer:
                    return answer.read()
            except urllib.error.HTTPError as exc:
                exc.close()
                problem = f"HTTP {exc.code} {exc.reason}"
                if exc.code not in RETRIABLE_STATUS:
                    raise BuildSystemError(f"the build system answered {problem} for {url}", url=url,
                                           status=exc.code, retriable=False) from None
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, DNS, cut short
                problem = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                self.log.info("build system: %s for %s; attempt %d of %d in %.1f s", problem, url, attempt + 1,
                              self.retries, self.backoff * 2 ** (attempt - 1))
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise BuildSystemError(f"the build system did not serve {url} after {self.retries} attempts ({problem}); "
                               f"is it up? (RELENG_PERIDOT_URL={self.base_url})", url=url)

    def fetch_repomd(self, repo_url: str) -> bytes:
        """The ``repodata/repomd.xml`` the build system serves now for the repo at ``repo_url``."""
        return self.fetch(f"{repo_url.rstrip('/')}/repodata/repomd.xml")
