"""The approval request's text, rendered from a promotion record: a one-line subject and a Markdown body."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from releng.core import fs

MARKDOWN_ROWS = 15
MARKDOWN_PACKAGES = 15


def subject(record: Mapping) -> str:
    t = record["totals"]
    # the release directory below its category: 9.7 (rocky), or 9/cloud for a SIG (sig)
    production = Path(record["production_dir"])
    dest = production.relative_to(record.get("production_category") or production.parent)
    src = "/".join(Path(record["staging_dir"]).parts[-len(dest.parts):])
    plan = record.get("point_release")
    if plan:
        previous = f"{plan['previous']} → " if plan["previous"] else ""
        return (f"Point release {record['release']} {previous}{plan['revision']} (staging {src}): "
                f"{t['payload']['files'] + t['metadata']['files']} files to copy, "
                f"{len(record.get('actions', ()))} link and vault changes")
    return (f"Promote {record['release']} {src} to production {dest}: "
            f"{t['packages']['added']} added, {t['packages']['updated']} updated, {t['packages']['removed']} "
            f"removed packages, {t['deletions']['files']} files deleted")


def markdown(record: Mapping, *, approvers: Sequence[str] = (), rows: int = MARKDOWN_ROWS,
             packages: int = MARKDOWN_PACKAGES) -> str:
    """The approval request body, most important first (Airflow shows Approve/Reject below it): what changes in
    one line, who may answer, then the phases, the delete bound, a per-tree table and the first package changes.

    A tree is one repository's os, debug, source or kickstart tree of one arch. Lists cut short say where the full
    list is: change_report's log, which the UI shows.
    """
    t, b = record["totals"], record["delete_bound"]
    h = fs.human_bytes
    p = t["packages"]
    repos = record["repos"]
    lines = [
        f"**{p['added']} added, {p['updated']} updated, {p['removed']} removed packages** in {len(repos)} "
        f"trees (repository, arch and kind); {t['payload']['files'] + t['metadata']['files']} files to copy "
        f"({h(t['payload']['bytes'] + t['metadata']['bytes'])}), {t['deletions']['files']} to delete.",
        "",
    ]
    if approvers:
        lines += [f"Only {', '.join(f'**{a}**' for a in approvers)} may answer (RELENG_APPROVERS); Airflow refuses "
                  "anyone else's Approve with *Access Denied*. No answer by the deadline counts as Reject.", ""]
    lines += [
        f"**Release** `{record['release']}` · **staging** `{record['staging_dir']}` → "
        f"**production** `{record['production_dir']}`",
        "",
        f"**Report digest** `{record['digest']}` (record `{record['run_id']}`)",
        "",
        "| phase | files | dirs | bytes |",
        "|---|---:|---:|---:|",
        f"| copy payload | {t['payload']['files']} | {t['payload']['dirs']} | {h(t['payload']['bytes'])} |",
        f"| copy metadata | {t['metadata']['files']} | {t['metadata']['dirs']} | {h(t['metadata']['bytes'])} |",
        f"| delete | {t['deletions']['files']} | {t['deletions']['dirs']} | {h(t['deletions']['bytes'])} |",
        "",
    ]
    verdict = ("**ABOVE THE BOUND**" + (" (allowed by allow_large_delete)" if b["allowed"] else " (will be refused)")
               if b["exceeded"] else "within the bound")
    superseded = b.get("superseded_metadata", 0)
    not_counted = (f", {superseded} of them superseded repodata files of repositories whose repomd.xml is "
                   "replaced, not counted" if superseded else "")
    lines += [f"Deletes {b['delete_files']} of {b['production_files']} production files{not_counted} "
              f"({b['share']:.1%}; bound {b['max_share']:.0%}): {verdict}.", ""]
    if record.get("point_release"):
        lines += point_release_markdown(record["point_release"])
    if repos:
        lines += ["| repository | arch | tree | added | updated | removed | files | bytes | deletes |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in repos[:rows]:
            lines.append(f"| {r['repo']} | {r['arch']} | {r['tree']} | {r['added_count']} | {r['updated_count']} "
                         f"| {r['removed_count']} | {r['files']} | {h(r['bytes'])} | {r['deletes']} |")
        if len(repos) > rows:
            rest = repos[rows:]
            lines.append(f"| … {len(rest)} more trees | | | {sum(r['added_count'] for r in rest)} "
                         f"| {sum(r['updated_count'] for r in rest)} | {sum(r['removed_count'] for r in rest)} "
                         f"| {sum(r['files'] for r in rest)} | {h(sum(r['bytes'] for r in rest))} "
                         f"| {sum(r['deletes'] for r in rest)} |")
        o = record["other"]
        if o["files"] or o["deletes"]:
            lines.append(f"| (outside repositories) | | | | | | {o['files']} | {h(o['bytes'])} | {o['deletes']} |")
        lines.append("")
    for title, names in package_lines(record):
        shown = ", ".join(f"`{n}`" for n in names[:packages])
        more = (f" … and {len(names) - packages} more (every change is listed in change_report's log)"
                if len(names) > packages else "")
        lines += [f"**{title}**: {shown}{more}", ""]
    if record["dry_run"]:
        lines += ["_Dry run: nothing will be promoted._", ""]
    return "\n".join(lines)


def package_lines(record: Mapping) -> list[tuple[str, list[str]]]:
    """(title, ``package (repository arch tree)`` lines) of the updated, added and removed packages; the
    tree is named because the same package is in several (an os tree and its kickstart tree, say)."""
    found = []
    for key, title in (("updated", "Updated"), ("added", "Added"), ("removed", "Removed")):
        names = []
        for r in record["repos"]:
            where = " ".join(str(x) for x in (r["repo"], r["arch"], r["tree"]) if x)
            for entry in r[key]:
                names.append(f"{entry[0]} → {entry[1]} ({where})" if key == "updated" else f"{entry} ({where})")
        if names:
            found.append((title, names))
    return found


def point_release_markdown(plan: Mapping) -> list[str]:
    """The point release's own changes: links in staging and production, the previous release to the vault."""
    h = fs.human_bytes
    previous = plan["previous"]
    lines = [f"**Point release** `{plan['revision']}`"
             + (f", superseding `{previous}`" if previous else " (no earlier point release in production)"), ""]
    rows = [("staging", name, old, new) for name, (old, new) in plan["staging_link_changes"].items()]
    rows += [("production", name, old, new) for name, (old, new) in plan["production_link_changes"].items()]
    if rows:
        lines += ["| tree | link | now | after |", "|---|---|---|---|"]
        lines += [f"| {tree} | `{name}` | `{old or '(none)'}` | `{new}` |" for tree, name, old, new in rows]
        lines.append("")
    else:
        lines += ["Every link already points at the new release.", ""]
    vault = plan.get("vault")
    if vault and vault["state"] == "to vault":
        lines += [f"**Vault**: `{vault['release']}` moves to `{vault['vault']}`: {vault['linked_files']} files "
                  f"({h(vault['linked_bytes'])}) as hard links to the same inodes (no second copy), "
                  f"{vault['repodata_files']} repodata files ({h(vault['repodata_bytes'])}) copied, checked and "
                  "signed with the release key when signing is on; then the release is removed from `mirror/pub` "
                  "and the vault's file lists are made.", ""]
    elif vault and vault["state"] != "done":
        lines += [f"**Vault**: `{vault['vault']}` already holds it; `{vault['release']}` is removed from "
                  "`mirror/pub`.", ""]
    elif vault:
        lines += [f"**Vault**: `{previous}` is already in `{vault['vault']}`.", ""]
    return lines
