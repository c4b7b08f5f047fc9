"""make_kickstart_trees: ``<Repo>/<arch>/kickstart`` made from the synced ``os`` tree by hard links.

The kickstart tree has the os tree's packages and repodata, so it is linked rather than downloaded a
second time (``releng.core.repo.trees.make_kickstart_tree``); only primary arches get one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from releng.core.layout import ComposeLayout
from releng.core.repo.repomd import RepoError
from releng.core.repo.trees import make_kickstart_tree


class KickstartTreeError(RepoError):
    """The os tree is incomplete or the kickstart tree made from it does not verify; retrying does not help."""


@dataclass(frozen=True)
class KickstartResult:
    """One kickstart tree made; ``to_xcom`` is the task's return value."""

    repo: str
    arch: str
    packages: int

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: dict) -> KickstartResult:
        return cls(**value)


def make_kickstart_trees(layout: ComposeLayout, repo: str, arch: str, *,
                         log: Callable[[str], None] = print) -> KickstartResult:
    """Link ``repo``'s ``arch`` kickstart tree from its os tree; :class:`KickstartTreeError` when that fails."""
    os_tree, ks_tree = layout.repo_tree(repo, arch), layout.repo_tree(repo, arch, "kickstart")
    try:
        report = make_kickstart_tree(os_tree, ks_tree)
    except RepoError as exc:
        raise KickstartTreeError(str(exc)) from None
    if not report.ok:
        raise KickstartTreeError(f"{ks_tree} does not verify: " + "; ".join(report.problems(5)))
    log(f"{ks_tree}: {report.packages} packages linked from {os_tree}")
    return KickstartResult(repo, arch, report.packages)
