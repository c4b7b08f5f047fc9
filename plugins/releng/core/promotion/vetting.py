"""Vetting: what the promotion would publish is checked with the real tools before anyone is asked to approve it.

After the change report, ``plan_vetting`` lists the checks over the run's staging release directory (the whole
tree: after the promotion production equals it) and writes them to the run's plan file. ``vet_staging`` maps
over them, one instance per check kind and target:

* ``isos``: every ISO under ``isos/<arch>/`` (not the ``latest`` links): ``checkisomd5``, the El Torito boot
  entries the arch needs (``xorriso -report_el_torito``), and on x86_64 a QEMU boot to the boot menu
  (:mod:`releng.core.bootcheck`);
* ``repos``: per arch, every repository's ``repomd.xml`` and the data files it names (size, checksum) and its
  ``repomd.xml.asc`` when signing is on (RELENG_REPO_SIGNING_KEY);
* ``repoclosure``: per arch, ``dnf repoclosure`` of every staged repo of the profile's repoclosure map;
* ``install``: per arch, ``dnf install`` of the profile's ``install_check`` (groups and packages) from staging
  into a scratch installroot, package signatures checked, scriptlets off, ``--forcearch`` for foreign arches;
* ``checksums``: every ``CHECKSUM`` under ``isos/`` and ``images/``: ``sha256sum -c`` and, when clear-signed,
  its signature by the release key.

Every check writes its rows (check, target, result, detail) to a result file of the run; ``vetting_verdict``
reads the plan and those files (never XComs, which REST users can write), writes the verdict bound to the
report's digest, and fails the run unless every check passed or the run asked for ``vetting_override`` (then
an audit entry records it). The approval asks only with a verdict that passed or was overridden, and shows its
table to the approver.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from releng.core import bootcheck, dnf
from releng.core.compose.repoclosure import ClosureError, repoclosure
from releng.core.fs import atomic_write
from releng.core.profile import ReleaseProfile
from releng.core.promotion import approval
from releng.core.promotion.audit import append_audit
from releng.core.promotion.base import Log, PromotionError, quiet, slug, utc_now
from releng.core.promotion.target import StateDir
from releng.core.promotion.vetting_files import (
    FAILED,
    NOT_RUN,
    OVERRIDDEN,
    PASSED,
    SKIPPED,
    load_verdict,
    read_json,
    run_dir,
    verdict_file,
)
from releng.core.repo.repomd import REPOMD, find_repos
from releng.core.repo.signatures import SignatureChecker
from releng.core.repo.verify import verify_repo
from releng.core.run import run

KINDS = ("isos", "repos", "repoclosure", "install", "checksums")
# The El Torito entries an arch's ISO must carry (ppc64le boots from its CHRP partition, not El Torito).
EL_TORITO_PLATFORMS: dict[str, tuple[str, ...]] = {"x86_64": ("BIOS", "UEFI"), "aarch64": ("UEFI",),
                                                   "s390x": ("BIOS",), "ppc64le": ()}
BOOTABLE_ARCHES = ("x86_64",)  # the arches this host boots in QEMU (qemu-system-x86_64, SeaBIOS)
DETAIL_CHARS = 300
_EL_TORITO_IMG = re.compile(r"^El Torito boot img :\s+(\d+)\s+(\S+)\s+", re.M)
_EL_TORITO_PATH = re.compile(r"^El Torito img path :\s+(\d+)\s+(\S.*)$", re.M)


class VettingRefused(PromotionError):
    """The approval or a check was asked to act without the vetting it needs; nothing was asked or checked."""


# --- the run's vetting files (paths from the run id) ---------------------------------------------------------


def plan_file(state: StateDir, run_id: str) -> Path:
    return run_dir(state, run_id) / "plan.json"


def result_file(state: StateDir, run_id: str, kind: str, target: str) -> Path:
    return run_dir(state, run_id) / "results" / f"{slug(f'{kind}:{target}')}.json"


def work_dir(state: StateDir, run_id: str, kind: str, target: str) -> Path:
    """Scratch space of one check (dnf roots, QEMU's serial console); the console log is kept."""
    return run_dir(state, run_id) / "work" / slug(f"{kind}:{target}")


def _write(path: Path, data: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, sort_keys=True, indent=1, ensure_ascii=False, default=str))


def row(check: str, target: str, result: str, detail: str) -> dict:
    detail = " ".join(detail.split())
    if len(detail) > DETAIL_CHARS:
        detail = detail[:DETAIL_CHARS - 1] + "…"
    return {"check": check, "target": target, "result": result, "detail": detail}


# --- the plan ------------------------------------------------------------------------------------------------


def _arch_of(rel: Path) -> str:
    """``BaseOS/x86_64/os`` -> x86_64, ``BaseOS/source/tree`` -> source."""
    parts = rel.parts
    return parts[1] if len(parts) > 1 else "."


def _staged_tree(staging: Path, profile: ReleaseProfile, repo_id: str, arch: str) -> Path:
    return staging / profile.repo(repo_id).dir / arch / "os"


def plan_checks(staging: Path, profile: ReleaseProfile) -> dict[str, list[str]]:
    """The targets of each check kind in the staging release directory ``staging``."""
    isos = sorted(str(p.relative_to(staging)) for p in staging.glob("isos/*/*.iso")
                  if p.is_file() and not p.is_symlink())
    repo_arches = sorted({_arch_of(rel) for rel in find_repos(staging)} - {"."})
    closure = [a for a in profile.arches
               if any((_staged_tree(staging, profile, r, a) / REPOMD).is_file() for r in profile.repoclosure)]
    install = []
    if profile.install_check is not None:
        install = [a for a in profile.arches
                   if all((_staged_tree(staging, profile, r, a) / REPOMD).is_file()
                          for r in profile.install_check.repos)]
    checksums = sorted(str(p.relative_to(staging)) for top in ("isos", "images")
                       for p in staging.glob(f"{top}/*/CHECKSUM") if p.is_file() and not p.is_symlink())
    return {"isos": isos, "repos": repo_arches, "repoclosure": closure, "install": install, "checksums": checksums}


def plan_vetting(state: StateDir, run_id: str, profile: ReleaseProfile, log: Log = quiet) -> dict[str, list[str]]:
    """The ``plan_vetting`` step: list the checks of this run's record and write them to its plan file.

    Earlier vetting files of the run are removed first (a report made again is vetted again). Empty lists
    when the run asks nobody (a dry run, staging equal to production): there is nothing to vet for an approver.
    """
    record = approval.run_record(state, run_id)
    shutil.rmtree(run_dir(state, run_id), ignore_errors=True)
    if not approval.needs_vetting(state, record):
        log("nothing will be asked in this run (dry run, or staging equals production): nothing to vet")
        return {kind: [] for kind in KINDS}
    staging = Path(record["staging_dir"])
    checks = plan_checks(staging, profile)
    _write(plan_file(state, run_id), {"run_id": run_id, "digest": record["digest"], "staging_dir": str(staging),
                                      "checks": [[k, t] for k in KINDS for t in checks[k]], "at": utc_now()})
    log("vetting " + "; ".join(f"{k}: {', '.join(t) or 'none'}" for k, t in checks.items()))
    return checks


def _planned(state: StateDir, run_id: str, record: Mapping) -> dict:
    plan = read_json(plan_file(state, run_id))
    if plan is None or plan.get("digest") != record["digest"]:
        raise VettingRefused(f"run {run_id} has no vetting plan for its report {record['digest']}; plan_vetting "
                             "must succeed after change_report in this run (clear change_report to vet again)")
    return plan


# --- the checks ----------------------------------------------------------------------------------------------


def check_iso(iso: Path, target: str, arch: str, work: Path, boot_timeout: float, log: Log) -> list[dict]:
    """checkisomd5, the El Torito entries ``arch`` needs, and (x86_64) a QEMU boot to the boot menu."""
    rows = []
    md5 = run(["checkisomd5", str(iso)], check=False, what="checkisomd5")
    said = (md5.stdout + md5.stderr).strip().splitlines()
    verdict = next((line for line in said if "result is" in line or "information available" in line),
                   said[-1] if said else "no output")
    rows.append(row("iso md5", target, PASSED if md5.returncode == 0 else FAILED,
                    f"checkisomd5: {verdict.strip()}" + ("" if md5.returncode == 0 else f" (exit {md5.returncode})")))
    log(f"{target}: checkisomd5 exit {md5.returncode}: {verdict.strip()}")
    report = run(["xorriso", "-indev", str(iso), "-report_el_torito", "plain"], check=False, what="xorriso")
    entries = {n: platform for n, platform in _EL_TORITO_IMG.findall(report.stdout)}
    paths = {n: path.strip() for n, path in _EL_TORITO_PATH.findall(report.stdout)}
    needed = EL_TORITO_PLATFORMS.get(arch, ())
    found = sorted(f"{platform} {paths.get(n, '(no image path)')}" for n, platform in entries.items())
    missing = [p for p in needed if p not in entries.values()]
    no_path = [n for n in entries if n not in paths]
    if report.returncode != 0:
        rows.append(row("iso El Torito", target, FAILED, f"xorriso could not read the ISO (exit "
                                                         f"{report.returncode}): {report.stderr.strip()[-200:]}"))
    elif missing or no_path:
        rows.append(row("iso El Torito", target, FAILED,
                        f"{arch} needs El Torito entries {', '.join(needed)}; found {', '.join(found) or 'none'}"))
    else:
        rows.append(row("iso El Torito", target, PASSED, ", ".join(found) or f"none needed on {arch}"))
    log(f"{target}: El Torito {', '.join(found) or 'none'}")
    if arch not in BOOTABLE_ARCHES:
        rows.append(row("iso boot", target, SKIPPED, f"not booted: this host boots {', '.join(BOOTABLE_ARCHES)} "
                                                     f"ISOs only (qemu-system-x86_64, BIOS)"))
        return rows
    try:
        boot = bootcheck.boot_to_menu(iso, work, timeout=boot_timeout)
    except bootcheck.BootCheckUnavailable as exc:
        rows.append(row("iso boot", target, FAILED, str(exc)))
        return rows
    log(f"{target}: boot {'ok' if boot.ok else 'FAILED'}: {boot.detail}")
    if not boot.ok:
        log(f"{target}: serial console (end): {boot.console_tail}")
    rows.append(row("iso boot", target, PASSED if boot.ok else FAILED,
                    boot.detail + ("" if boot.ok else f"; console log {work / 'serial.log'}")))
    return rows


def check_repos(staging: Path, arch: str, signing_key: str, gnupghome: Path | None, log: Log) -> list[dict]:
    """Every repository of ``arch``: repomd.xml's data files (size, checksum) and its signature when signing."""
    rows = []
    checker = SignatureChecker(signing_key, gnupghome) if signing_key else None
    try:
        for rel in find_repos(staging):
            if _arch_of(rel) != arch:
                continue
            report = verify_repo(staging / rel, packages=False)
            problems = report.problems(5)
            signed = ""
            if checker is not None:
                bad = checker.problem(staging / rel / REPOMD)
                problems += [bad] if bad else []
                signed = ", repomd.xml.asc good"
            text = str(rel)
            rows.append(row("repodata", text, FAILED if problems else PASSED,
                            "; ".join(problems) if problems else f"repomd.xml and its data files verify{signed}"))
            log(f"{text}: {'; '.join(problems) or 'ok'}")
    finally:
        if checker is not None:
            checker.close()
    if not rows:
        rows.append(row("repodata", arch, FAILED, f"no repository of {arch} found in {staging}"))
    return rows


def check_repoclosure(staging: Path, profile: ReleaseProfile, arch: str, work: Path, log: Log) -> list[dict]:
    """``dnf repoclosure`` of every staged repo of the profile's repoclosure map on ``arch``."""
    rows = []
    for repo_id in profile.repoclosure:
        if arch not in profile.repo_arches(repo_id) or not (_staged_tree(staging, profile, repo_id, arch) /
                                                             REPOMD).is_file():
            continue
        target = f"{repo_id} {arch}"
        try:
            closed = repoclosure(profile, repo_id, arch, compose_dir=staging, work_dir=work, log=log)
        except ClosureError as exc:
            rows.append(row("repoclosure", target, FAILED, str(exc)))
            continue
        deps = ", ".join(profile.repoclosure[repo_id]) or "itself"
        rows.append(row("repoclosure", target, PASSED, f"{closed.checked} packages close against {deps}"))
    shutil.rmtree(work, ignore_errors=True)
    return rows


_DNF_PROBLEM = re.compile(r"^(Error|Problem|  - |Transaction check error|  file |No match|Failed|Error:).*")


def check_install(staging: Path, profile: ReleaseProfile, arch: str, work: Path, key_dir: Path,
                  log: Log) -> list[dict]:
    """Install the profile's ``install_check`` from staging into a scratch root as ``arch`` (dnf, real rpm)."""
    spec = profile.install_check
    assert spec is not None  # planned only for profiles that have one
    wanted = [f"@{g}" for g in spec.groups] + list(spec.packages)
    target = f"{arch}: {' '.join(wanted)}"
    keys = [key_dir / k for k in profile.gpg_keys if (key_dir / k).is_file()]
    if not keys:
        return [row("install", target, FAILED, f"none of the profile's keys ({', '.join(profile.gpg_keys)}) is in "
                                               f"{key_dir} (RELENG_GPG_KEY_DIR); package signatures cannot be checked")]
    ws = dnf.fresh_workspace(work)
    try:
        repos = [dnf.DnfRepo(r, _staged_tree(staging, profile, r, arch).resolve().as_uri()) for r in spec.repos]
        # Package signatures with the distribution's keys; repomd.xml's signature is the repos check's.
        ws.config.write_text(dnf.dnf_config(ws, repos, keys, gpgcheck=True, repo_gpgcheck=False))
        run(dnf.rpm_initdb_argv(ws), what="rpm --initdb")
        for key in keys:
            run(dnf.rpm_import_argv(ws, key), what="rpm --import")
        argv = dnf.install_argv(ws, wanted, arch, major=profile.major, disttag=profile.disttag)
        log(f"{arch}: dnf install {' '.join(wanted)} from {', '.join(spec.repos)} into {ws.installroot}")
        done = run(argv, check=False, what="dnf install", env=dnf.dnf_env())
        output = (done.stdout + done.stderr).strip()
        (work.parent / f"{work.name}.log").write_text(f"$ {' '.join(argv)}\n{output}\n")
        if done.returncode != 0:
            problems = [line.strip() for line in output.splitlines() if _DNF_PROBLEM.match(line)]
            for line in output.splitlines()[-40:]:
                log(f"  {line}")
            return [row("install", target, FAILED, f"dnf install exited {done.returncode}: "
                                                   + ("; ".join(problems[:6]) or output[-300:]))]
        installed = [p for p in run(["rpm", "--root", str(ws.installroot), "-qa"], what="rpm -qa").stdout.split()
                     if not p.startswith("gpg-pubkey-")]
        foreign = "" if arch == os.uname().machine else f" (--forcearch {arch}: resolved and unpacked on " \
                                                         f"{os.uname().machine})"
        log(f"{arch}: {len(installed)} packages installed{foreign}")
        return [row("install", target, PASSED, f"{len(installed)} packages resolved and installed from "
                                               f"{', '.join(spec.repos)}, signatures checked, scriptlets off{foreign}")]
    finally:
        dnf.stop_gpg_agents(ws)
        shutil.rmtree(ws.root, ignore_errors=True)


def check_checksum_file(path: Path, target: str, signing_key: str, gnupghome: Path | None, log: Log) -> list[dict]:
    """``sha256sum -c`` of a CHECKSUM file in its directory; its clear-signature when it has one."""
    text = path.read_text(errors="replace")
    signed = text.startswith("-----BEGIN PGP SIGNED MESSAGE-----")
    done = run(["sha256sum", "-c", path.name], check=False, cwd=path.parent, what="sha256sum -c")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    bad = [line for line in lines if not line.endswith(": OK")]
    ok = [line for line in lines if line.endswith(": OK")]
    problems = []
    if done.returncode != 0:
        problems.append(f"sha256sum -c exited {done.returncode}: " + "; ".join(bad[:5] or
                                                                              done.stderr.strip().splitlines()[-2:]))
    elif not ok:
        problems.append("sha256sum -c verified no file")
    signature = ""
    if signed and signing_key:
        checker = SignatureChecker(signing_key, gnupghome)
        try:
            if bad_sig := checker.clearsigned_problem(path):
                problems.append(bad_sig)
            else:
                signature = f"; clear-signature good ({signing_key})"
        finally:
            checker.close()
    elif not signed:
        signature = "; not clear-signed"
    else:
        signature = "; clear-signed, signature not checked (RELENG_REPO_SIGNING_KEY is empty)"
    log(f"{target}: {len(ok)} files OK{signature}; {'; '.join(problems) or 'no problems'}")
    return [row("CHECKSUM", target, FAILED if problems else PASSED,
                "; ".join(problems) if problems else f"{len(ok)} files match{signature}")]


def vet(state: StateDir, run_id: str, kind: str, target: str, profile: ReleaseProfile, *, signing_key: str = "",
        gnupghome: Path | None = None, key_dir: Path, boot_timeout: float = bootcheck.DEFAULT_TIMEOUT,
        log: Log = quiet) -> dict:
    """One ``vet_<kind>`` instance: run the check on ``target`` and write its result file; the result.

    Only a check the run's plan lists runs (the target comes from an XCom, which REST users can write), and
    only inside the staging release directory of the run's record.
    """
    record = approval.run_record(state, run_id)
    plan = _planned(state, run_id, record)
    if [kind, target] not in plan["checks"]:
        raise VettingRefused(f"{kind} {target!r} is not a check of run {run_id}'s vetting plan; nothing was checked")
    staging = Path(record["staging_dir"])
    work = work_dir(state, run_id, kind, target)
    shutil.rmtree(work, ignore_errors=True)
    if kind == "isos":
        rows = check_iso(staging / target, target, Path(target).parent.name, work, boot_timeout, log)
    elif kind == "repos":
        rows = check_repos(staging, target, signing_key, gnupghome, log)
    elif kind == "repoclosure":
        rows = check_repoclosure(staging, profile, target, work, log)
    elif kind == "install":
        rows = check_install(staging, profile, target, work, key_dir, log)
    elif kind == "checksums":
        rows = check_checksum_file(staging / target, target, signing_key, gnupghome, log)
    else:
        raise VettingRefused(f"unknown vetting check {kind!r}; one of {', '.join(KINDS)}")
    result = {"run_id": run_id, "digest": record["digest"], "kind": kind, "target": target, "rows": rows,
              "at": utc_now()}
    _write(result_file(state, run_id, kind, target), result)
    return result


def failed_rows(rows: Sequence[Mapping]) -> list[Mapping]:
    return [r for r in rows if r["result"] not in (PASSED, SKIPPED)]


def describe(r: Mapping) -> str:
    return f"{r['check']} {r['target']}"


# --- the verdict ---------------------------------------------------------------------------------------------


def vetting_verdict(state: StateDir, run_id: str, dag_id: str, *, override: bool, log: Log = quiet) -> dict | None:
    """The ``vetting_verdict`` step: every planned check's rows, from the files the checks wrote; the verdict.

    None when the run asks nobody (nothing was planned). A planned check without a result for this report
    (its task failed, was skipped or was marked by hand) counts as failed. The verdict is ``passed``,
    ``failed``, or ``overridden`` (failed, and the run was triggered with ``vetting_override``: an audit entry
    records it). It is written to the run's verdict file, which the approval and the audit read.
    """
    record = approval.run_record(state, run_id)
    verdict_file(state, run_id).unlink(missing_ok=True)
    if not approval.needs_vetting(state, record):
        return None
    plan = _planned(state, run_id, record)
    rows: list[dict] = []
    for kind, target in plan["checks"]:
        result = read_json(result_file(state, run_id, kind, target))
        if result is None or result.get("digest") != record["digest"] or not result.get("rows"):
            rows.append(row(kind, target, NOT_RUN, "the check left no result for this report (its task failed, "
                                                   "was skipped or was marked by hand)"))
        else:
            rows += result["rows"]
    failed = [describe(r) for r in failed_rows(rows)]
    status = PASSED if not failed else OVERRIDDEN if override else FAILED
    verdict = {"run_id": run_id, "digest": record["digest"], "status": status, "override": override,
               "failed": failed, "checks": len(rows), "rows": rows, "at": utc_now()}
    _write(verdict_file(state, run_id), verdict)
    if status == OVERRIDDEN:
        append_audit(state, {"event": "vetting_override", "run_id": run_id, "dag_id": dag_id,
                             "task_id": "vetting_verdict", "release": record["release"],
                             "staging_dir": record["staging_dir"], "production_dir": record["production_dir"],
                             "digest": record["digest"], "outcome": "vetting failed; approval asked anyway "
                             "(vetting_override)", "failed": failed, "logged_at": utc_now()})
    log(f"vetting {status}: {len(rows) - len(failed)} of {len(rows)} checks passed or skipped"
        + (f"; failed: {', '.join(failed)}" if failed else ""))
    return verdict


def require_cleared(state: StateDir, record: Mapping) -> dict:
    """The verdict that lets the approval ask: passed, or overridden; :class:`VettingRefused` otherwise."""
    verdict = load_verdict(state, record["run_id"], record["digest"])
    if verdict is None:
        raise VettingRefused(f"report {record['digest']} of run {record['run_id']} has no vetting verdict: "
                             "vetting_verdict did not run for it (skipped, failed or marked by hand). Nobody is "
                             "asked before staging is vetted: clear change_report to vet again")
    if verdict["status"] not in (PASSED, OVERRIDDEN):
        raise VettingRefused(f"vetting failed ({', '.join(verdict['failed'])}); nobody is asked. Fix staging, "
                             "or trigger the promotion with vetting_override=true to ask anyway")
    return verdict


# --- the approver's table ------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(verdict: Mapping | None) -> str:
    """The approval body's "Vetting" section: the verdict and one table row per check, failures first."""
    lines = ["### Vetting", ""]
    if verdict is None:
        return "\n".join([*lines, "_No vetting verdict for this report._", ""])
    n = verdict["checks"]
    if verdict["status"] == PASSED:
        lines.append(f"All {n} checks passed or were skipped (skips say why).")
    elif verdict["status"] == OVERRIDDEN:
        lines.append(f"**VETTING FAILED: {len(verdict['failed'])} of {n} checks failed** "
                     f"({', '.join(verdict['failed'])}). Asked anyway: the run was triggered with "
                     "`vetting_override` (recorded in the audit log).")
    else:
        lines.append(f"**VETTING FAILED: {', '.join(verdict['failed'])}**")
    lines += ["", "| check | target | result | detail |", "|---|---|---|---|"]
    order = {FAILED: 0, NOT_RUN: 0, SKIPPED: 1, PASSED: 2}
    for r in sorted(verdict["rows"], key=lambda r: order.get(r["result"], 0)):
        result = r["result"] if r["result"] in (PASSED, SKIPPED) else f"**{r['result'].upper()}**"
        lines.append(f"| {_cell(r['check'])} | {_cell(r['target'])} | {result} | {_cell(r['detail'])} |")
    return "\n".join([*lines, ""])


def approval_body(report_markdown: str, verdict: Mapping | None) -> str:
    """The approval request's body: the change report, then the Vetting section."""
    return f"{report_markdown.rstrip()}\n\n{markdown(verdict)}"

