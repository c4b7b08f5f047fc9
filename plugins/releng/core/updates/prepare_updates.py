"""prepare_updates and its work lists (the ``plan.*`` tasks): what a general_updates run syncs and checks.

prepare_updates checks the params against the profile, that staging has the
release directory and that the signing key is usable, then lays out the work
area and the closure view; nothing is written when a check fails. Its summary
(:class:`UpdatesSummary`) is what every later task of the run reads.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from releng.core.compose.prepare_compose import ComposeParams, plan_compose
from releng.core.fs import swap_symlink
from releng.core.layout import ComposeLayout, LayoutError, ReleaseTrees, safe_part
from releng.core.profile import ReleaseProfile
from releng.core.repo.repomd import REPOMD, REPOMD_ASC
from releng.core.settings import Settings
from releng.core.staging.signing import signing_key_problem
from releng.core.updates import PLAN_KINDS, UpdatesError

# --- parameters and plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatesParams:
    """Validated run parameters of ``general_updates``."""

    repos: tuple[str, ...]
    rc: bool


def validate_params(profile: ReleaseProfile, raw: Mapping) -> UpdatesParams:
    """``repos`` (empty: every repo of the release) must be repo ids of the release, each once."""
    repos = list(raw.get("repos") or profile.repo_ids)
    problems = []
    unknown = [r for r in repos if r not in profile.repo_ids]
    if unknown:
        problems.append(f"repos {', '.join(map(repr, unknown))} are not repos of {profile.name} "
                        f"(it has {', '.join(profile.repo_ids)}); use build-system repo ids, or none for all")
    if len(set(repos)) != len(repos):
        problems.append("repos lists a repo twice")
    if problems:
        raise UpdatesError(f"the parameters do not make a valid {profile.name} update run:\n- "
                           + "\n- ".join(problems))
    return UpdatesParams(tuple(r for r in profile.repo_ids if r in repos), bool(raw.get("rc", False)))


def updates_layout(profile: ReleaseProfile, compose_root: Path, timestamp: str) -> ComposeLayout:
    """The run's work area ``<compose_root>/<major>/<Short>-<X.Y>-updates-<ts>``, laid out like a compose
    (``compose/<RepoDir>/<arch>/os`` ...) so that it maps one to one onto the staging release directory."""
    return ComposeLayout(profile, Path(compose_root),
                         safe_part(f"{profile.shortname}-{profile.revision}-updates-{timestamp}", "updates id"))


@dataclass(frozen=True)
class UpdatesPlan:
    """What one run does: the trees to sync (and regenerate in staging) and the closure checks."""

    trees: list[dict] = field(default_factory=list)  # {"repo", "arch", "kind"}
    repoclosure: list[dict] = field(default_factory=list)  # {"repo", "arch"}
    closure_repos: dict[tuple[str, str], bool] = field(default_factory=dict)  # (repo, arch) -> updated by this run


def plan_updates(profile: ReleaseProfile, params: UpdatesParams,
                 staged: Collection[tuple[str, str, str]] | None = None) -> UpdatesPlan:
    """os, debug and source trees of the chosen repos; closure of each chosen repo in the repoclosure map, and
    which trees each check reads (the run's own for updated repos, staging's for the others).

    ``staged``: the (repo, arch, kind) trees staging has. An update run only updates those: a tree staging does
    not have was never composed (an arch left out of the compose, a repo added to the profile later) and comes
    to staging with a compose, not with updates. None plans every tree of the profile.
    """
    full = plan_compose(profile, ComposeParams(profile.arches, params.rc, True, True, (), True))
    chosen = set(params.repos)
    trees = [item for item in full.reposync if item["repo"] in chosen
             and (staged is None or (item["repo"], item["arch"], item["kind"]) in staged)]
    updated = {(t["repo"], t["arch"]) for t in trees if t["kind"] == "os"}
    closure = [item for item in full.repoclosure if (item["repo"], item["arch"]) in updated]
    reads: dict[tuple[str, str], bool] = {}
    for item in closure:
        for repo in (item["repo"], *profile.repoclosure[item["repo"]]):
            reads[(repo, item["arch"])] = (repo, item["arch"]) in updated
    return UpdatesPlan(trees, closure, reads)


def staged_trees(layout: ComposeLayout, staging_dir: Path, trees: Iterable[Mapping]) -> set[tuple[str, str, str]]:
    """The (repo, arch, kind) of ``trees`` that staging has (a ``repomd.xml`` at the same place)."""
    return {(t["repo"], t["arch"], t["kind"]) for t in trees
            if (staging_tree(layout, staging_dir, t["repo"], t["arch"], t["kind"]) / REPOMD).is_file()}


def tree_label(tree: Mapping) -> str:
    return f"{tree['repo']} {tree['arch']} {tree['kind']}"


def staging_tree(layout: ComposeLayout, staging_dir: Path, repo: str, arch: str, kind: str) -> Path:
    """The staging tree that corresponds to a tree of the work area (same path below the release dir)."""
    return Path(staging_dir) / layout.repo_tree(repo, arch, kind).relative_to(layout.compose)


def closure_view(layout: ComposeLayout, staging_dir: Path, plan: UpdatesPlan) -> Path:
    """``work/closure/<RepoDir>/<arch>/os`` links: to the run's synced tree for an updated repo, to staging's
    for a repo the run only depends on. Repoclosure reads this directory as its compose directory, so the new
    packages are checked against what staging will hold. Raises UpdatesError naming each dependency that is
    neither updated nor in staging."""
    targets = {(repo, arch): layout.repo_tree(repo, arch) if updated
               else staging_tree(layout, staging_dir, repo, arch, "os")
               for (repo, arch), updated in sorted(plan.closure_repos.items())}
    missing = [f"{repo} {arch} ({target})" for (repo, arch), target in targets.items()
               if not plan.closure_repos[(repo, arch)] and not (target / REPOMD).is_file()]
    if missing:
        checked = sorted({i["repo"] for i in plan.repoclosure})
        raise UpdatesError(f"the closure check of {', '.join(checked)} needs repos this run does not update and "
                           f"staging does not have: {'; '.join(missing)}. Add them to `repos`, or stage the "
                           "release with full_compose first")
    view = layout.work / "closure"
    for (repo, arch), target in targets.items():
        link = view / layout.profile.repo(repo).dir / arch / "os"
        link.parent.mkdir(parents=True, exist_ok=True)
        swap_symlink(str(target), link)
    return view


def release_staging_dir(profile: ReleaseProfile, staging_root: Path, production_root: Path, rc: bool) -> Path:
    try:
        return ReleaseTrees(profile, Path(staging_root), Path(production_root)).staging_dir(rc)
    except LayoutError as exc:
        raise UpdatesError(str(exc)) from None


# --- the task -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatesSummary:
    """prepare_updates' result, which every later task of the run reads."""

    release: str
    repos: tuple[str, ...]
    rc: bool
    staging_dir: Path
    compose_root: Path
    updates_id: str
    top: Path
    closure_dir: Path
    trees: tuple[tuple[str, str, str], ...]  # (repo, arch, kind) staging had when the run was prepared
    skipped: tuple[tuple[str, str, str], ...] = ()  # trees of the chosen repos staging does not have

    def to_xcom(self) -> dict:
        return {"release": self.release, "repos": list(self.repos), "rc": self.rc,
                "staging_dir": str(self.staging_dir), "compose_root": str(self.compose_root),
                "updates_id": self.updates_id, "top": str(self.top), "closure_dir": str(self.closure_dir),
                "trees": [list(t) for t in self.trees], "skipped": [list(t) for t in self.skipped]}

    @classmethod
    def from_xcom(cls, data: Mapping) -> UpdatesSummary:
        return cls(str(data["release"]), tuple(data["repos"]), bool(data["rc"]), Path(data["staging_dir"]),
                   Path(data["compose_root"]), str(data["updates_id"]), Path(data["top"]),
                   Path(data["closure_dir"]), tuple((str(r), str(a), str(k)) for r, a, k in data["trees"]),
                   tuple((str(r), str(a), str(k)) for r, a, k in data.get("skipped", ())))

    @property
    def params(self) -> UpdatesParams:
        return UpdatesParams(self.repos, self.rc)

    def layout(self, profile: ReleaseProfile) -> ComposeLayout:
        return ComposeLayout(profile, self.compose_root, self.updates_id)


def prepare_updates(profile: ReleaseProfile, raw_params: Mapping, site: Settings,
                    timestamp: str) -> tuple[UpdatesSummary, UpdatesPlan]:
    """Check the run (params, staging release directory, signing key), lay out the work area and the closure
    view. UpdatesError, with nothing written, when a check fails."""
    if profile.sig:
        raise UpdatesError(f"{profile.name} is a SIG (sig: {profile.sig}): its staging directory is an exact copy of "
                           "its latest compose, so it gets new packages with a new full_compose run, not with "
                           "general_updates")
    run = validate_params(profile, raw_params)
    staging_dir = release_staging_dir(profile, site.staging_root, site.production_root, run.rc)
    if not staging_dir.is_dir():
        raise UpdatesError(f"staging release directory {staging_dir} does not exist; stage {profile.name} with "
                           f"full_compose first, or check `rc` (this run has rc={run.rc})")
    if site.repo_signing_key:
        problem = signing_key_problem(site.repo_signing_key, site.gnupghome)
        if problem:
            raise UpdatesError(problem)
    layout = updates_layout(profile, site.compose_root, timestamp)
    every = plan_updates(profile, run).trees
    staged = staged_trees(layout, staging_dir, every)
    plan = plan_updates(profile, run, staged)
    if not plan.trees:
        raise UpdatesError(f"staging release directory {staging_dir} has none of the trees of "
                           f"{', '.join(run.repos)}; an update run only updates trees a compose staged: stage "
                           f"{profile.name} with full_compose first, or check `repos` and `rc`")
    signed = [tree_label(t) for t in plan.trees
              if (staging_tree(layout, staging_dir, t["repo"], t["arch"], t["kind"]) / REPOMD_ASC).is_file()]
    if signed and not site.repo_signing_key:
        raise UpdatesError(f"staging's repomd.xml is signed in {len(signed)} of the {len(plan.trees)} trees this run "
                           f"updates ({', '.join(signed[:3])}{', ...' if len(signed) > 3 else ''}), and no "
                           "signing key is set: metadata an update changes could only be published unsigned. Set "
                           "RELENG_REPO_SIGNING_KEY (and RELENG_GNUPGHOME) to the release's repo key")
    view = closure_view(layout, staging_dir, plan)
    summary = UpdatesSummary(profile.name, run.repos, run.rc, staging_dir, layout.compose_root, layout.compose_id,
                             layout.top, view, tuple(sorted(staged)),
                             tuple((t["repo"], t["arch"], t["kind"]) for t in every
                                   if (t["repo"], t["arch"], t["kind"]) not in staged))
    return summary, plan


def work_list(summary: UpdatesSummary, profile: ReleaseProfile, kind: str) -> list[dict]:
    """One work list of the run (``PLAN_KINDS``) as the mapped operator's kwargs: ``reposync`` (SyncReposOperator),
    ``repoclosure`` (RepoclosureOperator) or ``repodata`` (update_repodata)."""
    if kind not in PLAN_KINDS:
        raise ValueError(f"unknown work list {kind!r}; one of {', '.join(PLAN_KINDS)}")
    layout = summary.layout(profile)
    plan = plan_updates(profile, summary.params, set(summary.trees))
    release = summary.release
    if kind == "repoclosure":
        return [{"release": release, "repo": i["repo"], "arch": i["arch"], "compose_dir": str(summary.closure_dir),
                 "work_dir": str(layout.work / "repoclosure")} for i in plan.repoclosure]
    items = []
    for tree in plan.trees:
        repo, arch, tree_kind = tree["repo"], tree["arch"], tree["kind"]
        name = f"{repo}-{arch}-{tree_kind}"
        synced = layout.repo_tree(repo, arch, tree_kind)
        staged = staging_tree(layout, summary.staging_dir, repo, arch, tree_kind)
        common = {"release": release, "repo": repo, "arch": arch, "kind": tree_kind}
        if kind == "reposync":
            # Packages staging already has are hard-linked from it instead of downloaded again.
            items.append({**common, "dest": str(synced), "work_dir": str(layout.work / "dnf" / name), "hashed": True,
                          "previous": str(staged) if (staged / REPOMD).is_file() else None})
        else:
            items.append({**common, "tree": str(staged), "synced": str(synced),
                          "scratch": str(layout.work / "repodata" / name)})
    return items
