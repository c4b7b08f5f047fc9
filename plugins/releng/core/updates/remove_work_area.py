"""remove_work_area: the run's work area, and those earlier failed runs of the release left for inspection
(staging holds their packages now, and one run at a time means no other run is using them)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from releng.core.layout import compose_major_dir
from releng.core.profile import ReleaseProfile


def work_areas(profile: ReleaseProfile, compose_root: Path) -> list[Path]:
    """The release's updates work areas under ``compose_root``: a run's own and those failed runs left."""
    major_dir = compose_major_dir(profile, compose_root)
    prefix = f"{profile.shortname}-{profile.revision}-updates-"
    return sorted(p for p in major_dir.glob(f"{prefix}*") if p.is_dir() and not p.is_symlink())


def remove_work_areas(profile: ReleaseProfile, compose_root: Path,
                      log: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Remove every work area of the release; the removed paths. OSError when one cannot be removed whole."""
    removed = []
    for area in work_areas(profile, compose_root):
        shutil.rmtree(area, ignore_errors=True)
        if area.exists():
            raise OSError(f"{area} could not be removed completely; remove it by hand")
        removed.append(str(area))
        log(f"removed {area}")
    return removed
