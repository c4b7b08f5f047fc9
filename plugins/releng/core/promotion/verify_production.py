"""``verify_production``: every repomd.xml under the promoted release directory is complete, and signed when
signing is on; failing here keeps the file lists unchanged, so mirrors are not told."""

from __future__ import annotations

from releng.core.promotion.base import Log, PromotionError, quiet
from releng.core.promotion.lock import production_lock
from releng.core.promotion.target import PromotionTarget
from releng.core.repo.verify import verify_tree
from releng.core.settings import Settings


def verify_production(target: PromotionTarget, cfg: Settings, *, log: Log = quiet) -> dict:
    """Every repomd.xml under the production release directory is complete, and signed when signing is on."""
    with production_lock(target.state, exclusive=False, holder="verify_production", log=log):
        result = verify_tree(target.production_dir, signing_key=cfg.repo_signing_key, gnupghome=cfg.gnupghome,
                             cache_file=target.state.verify_cache(target.production_dir), log=log)
    problems = result.problems(None)
    if problems:
        shown = "\n".join(problems[:30])
        raise PromotionError(f"production {target.production_dir} failed verification ({len(problems)} "
                             f"problems); the file lists were not updated, so mirrors are not told:\n{shown}")
    return {"repos": result.repos, "bytes_hashed": result.bytes_hashed, "signatures": result.signatures}
