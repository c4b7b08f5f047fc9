"""Facts every DAG shares: who owns it, how tasks retry, and the release choice on the trigger form."""

from __future__ import annotations

import warnings
from datetime import timedelta

from airflow.sdk import Param

from releng.core.arches import PRIMARY_ARCHES
from releng.core.profile import ReleaseChoice, release_choice
from releng.core.releases import default_release, updates_releases
from releng.core.settings import settings

OWNER = "release-eng"
SHOWN_PROBLEMS = 10


def default_args(retry_delay: timedelta = timedelta(minutes=2)) -> dict:
    return {"owner": OWNER, "retries": 1, "retry_delay": retry_delay}


def releases() -> ReleaseChoice:
    """The profiles in RELENG_CONFIG_DIR, each validated (a few small YAML files: cheap at parse time).

    A broken profile is left out of every choice and named in a warning, which the dag-processor logs.
    """
    choice = release_choice(settings().config_dir)
    if choice.broken:
        warnings.warn(f"release profiles not offered on the trigger forms: {broken_summary(choice)}",
                      UserWarning, stacklevel=2)
    return choice


def broken_summary(choice: ReleaseChoice) -> str:
    """The broken profiles' problems as FILE: KEY: REASON, the first few of them."""
    problems = [str(p) for found in choice.problems.values() for p in found]
    more = f"; … and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    return (f"{', '.join(choice.broken)} (invalid; python -m releng validate): "
            f"{'; '.join(problems[:SHOWN_PROBLEMS])}{more}")


def release_param(choice: ReleaseChoice | None = None, *, description: str = "Which release to build.") -> Param:
    """A choice among the valid profiles whose default is RELENG_DEFAULT_RELEASE, else the newest release by
    version (el10 before el9). A setting that names no valid profile stops the DAG from loading, naming it.

    Each choice shows the release's name and version; the description says which arches each release ships.
    """
    choice = choice or releases()
    default = default_release(settings().default_release, choice)
    shipped = "; ".join(f"{name}: {', '.join(p.arches)}" for name, p in choice.profiles.items())
    description += f" Arches per release: {shipped}."
    if choice.broken:
        description += f" Not offered: {broken_summary(choice)}"
    return Param(default, type="string", enum=list(choice.names), title="Release", description=description,
                 values_display={name: f"{name} ({p.fullname})" for name, p in choice.profiles.items()})


def promotion_params(*, release: str, rc: str, dry_run: str, large_delete: str,
                     after_rc: dict[str, Param] | None = None) -> dict[str, Param]:
    """The trigger form of a DAG that promotes staging through the approval gate (promote_to_production,
    point_release): release, rc, ``after_rc`` (the DAG's own), dry_run, allow_large_delete, vetting_override."""
    return {
        "release": release_param(description=release),
        "rc": Param(False, type="boolean", title="Release candidate", description=rc),
        **(after_rc or {}),
        "dry_run": Param(False, type="boolean", title="Dry run", description=dry_run),
        "allow_large_delete": Param(False, type="boolean", title="Allow large deletions", description=large_delete),
        "vetting_override": Param(False, type="boolean", title="Ask even if vetting fails",
                                  description="Ask the approvers even when a vetting check failed; the override is "
                                              "recorded in the audit log and shown in the approval request."),
    }


def _only_in(value: str, owners: dict[str, list[str]], choice: ReleaseChoice) -> str:
    """``value``, or ``value (el10 only)`` when not every release offers it."""
    having = owners[value]
    return value if len(having) == len(choice.names) else f"{value} ({', '.join(having)} only)"


def arches_param(choice: ReleaseChoice | None = None) -> Param:
    """The arches to compose: a multi-select of the arches some valid release ships (an arch no release ships
    is refused by the form); empty means every arch of the release, and the form sends null for empty."""
    choice = choice or releases()
    owners: dict[str, list[str]] = {}
    for name, profile in choice.profiles.items():
        for arch in profile.arches:
            owners.setdefault(arch, []).append(name)
    arches = [a for a in PRIMARY_ARCHES if a in owners]
    return Param(None, type=["array", "null"], title="Architectures", examples=arches,
                 items={"type": "string", "enum": arches}, uniqueItems=True, maxItems=len(arches),
                 values_display={a: _only_in(a, owners, choice) for a in arches},
                 description="Empty: every arch of the release. An arch the chosen release does not ship stops "
                             "the run in prepare_compose (the Release field lists each release's arches).")


def disc_images_param(choice: ReleaseChoice | None = None) -> Param:
    """Extra ISOs: a multi-select of the disc images the valid releases build (iso.images entries that are disc
    images and not isoskip); empty (null) means none."""
    choice = choice or releases()
    owners: dict[str, list[str]] = {}
    for name, profile in choice.profiles.items():
        for image, spec in profile.iso_images.items():
            if spec.disc and not spec.isoskip:
                owners.setdefault(image, []).append(name)
    images = sorted(owners)
    return Param([i for i in ("dvd",) if i in owners], type=["array", "null"], title="Extra ISOs",
                 examples=images, items={"type": "string", "enum": images}, uniqueItems=True,
                 maxItems=max(len(images), 1), values_display={i: _only_in(i, owners, choice) for i in images},
                 description="DVD-style images to build per arch, besides the boot ISO lorax makes. Empty: none.")


def repos_param(choice: ReleaseChoice | None = None) -> Param:
    """general_updates' repos: a multi-select of the build-system repo ids of the valid releases (an id no
    release has is refused by the form); empty (null) means every repo of the release."""
    choice = choice or releases()
    owners: dict[str, list[str]] = {}
    for name, profile in choice.profiles.items():
        for repo in profile.repo_ids:
            owners.setdefault(repo, []).append(name)
    repos = sorted(owners)
    return Param(None, type=["array", "null"], title="Repos", examples=repos, uniqueItems=True,
                 maxItems=max(len(repos), 1), items={"type": "string", "enum": repos},
                 values_display={r: _only_in(r, owners, choice) for r in repos},
                 description="Build-system repos to update. Empty: every repo of the release.")


def scheduled_releases() -> list[str]:
    """The releases scheduled_updates covers now: RELENG_UPDATES_RELEASES, or every profile, newest first."""
    return updates_releases(settings().updates_releases, releases())
