"""update_repodata instances of one run regenerate their trees at the same time (the `repodata` pool): each swaps
only its own tree, so while all of them run every tree's repomd.xml names only files that exist, and each ends
with complete, verified metadata. Real createrepo_c, modifyrepo_c and gpg."""

from __future__ import annotations

import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import read_repomd, tree_path
from releng.core.repo.verify import verify_repo
from releng.core.updates.update_repodata import RepodataJob, distro_tag, regenerate_repodata

TREES = 6


def _staged_and_synced(fixture, el9, root: Path) -> tuple[Path, Path]:
    """Like test_update_repodata's `trees`: staging has a package its metadata does not list yet."""
    upstream = fixture.repo_dir(el9.project_id, "AppStream", "x86_64", hashed=True)
    base = fixture.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    tree, synced = shutil.copytree(upstream, root / "staging"), shutil.copytree(upstream, root / "synced")
    (tree / "repodata" / "repomd.xml.asc").unlink()
    for dest in (synced, tree):
        (dest / "Packages" / "l").mkdir(exist_ok=True)
        shutil.copy2(base / "Packages" / "l" / "libfoo-1.0-1.el9.x86_64.rpm", dest / "Packages" / "l")
    subprocess.run(["createrepo_c", "-q", "--update", "--keep-all-metadata", "--no-database", str(synced)],
                   check=True)
    return tree, synced


def test_trees_regenerated_at_once_stay_consistent(fixture_buildsystem, el9, tmp_path):
    pairs = [_staged_and_synced(fixture_buildsystem, el9, tmp_path / f"t{i}") for i in range(TREES)]
    broken: list[str] = []
    done = threading.Event()

    def missing(tree: Path) -> list[str]:
        return [r.href for r in read_repomd(tree) if not tree_path(tree, r.href).is_file()]

    def watch() -> None:  # a web client reading every tree while the swaps run
        while not done.is_set():
            for tree, _ in pairs:
                try:
                    # a file gone after the client read repomd.xml is a superseded one: a client that fails on it
                    # reads repomd.xml again (as dnf does); that one must name only files that exist
                    if missing(tree):
                        broken.extend(f"{tree}: {href}" for href in missing(tree))
                except (OSError, ValueError) as exc:
                    broken.append(f"{tree}: {exc}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(TREES) as pool:
            results = list(pool.map(lambda pair: regenerate_repodata(RepodataJob(
                tree=pair[0], synced=pair[1], scratch=pair[0].parent / "scratch", label=str(pair[0]),
                distro=distro_tag(el9), comps_required=True, modules_required=True)), pairs))
    finally:
        done.set()
        watcher.join()
    assert broken == [], broken[:5]  # never a repomd.xml naming a file that is not there
    for (tree, _), result in zip(pairs, results, strict=True):
        assert result.changed and result.added == ["libfoo-0:1.0-1.el9.x86_64"]
        assert "Packages/l/libfoo-1.0-1.el9.x86_64.rpm" in {p.href for p in iter_packages(tree)}
        assert verify_repo(tree).ok
