"""Lorax per arch: lorax's options, the build job both backends run, and the pod's per-arch settings.

One build script, ``include/lorax/build-lorax.sh``, runs lorax (or, where lorax is not installed,
the stand-in next to it), writes the boot ISO manifest, packs ``lorax-<R>-<arch>.tar.gz``,
uploads it with ``include/lorax/s3_upload.py`` and reports ``{"arch", "key", "sha256", "size"}``.
Lorax's options have one source, :func:`lorax_options`; they are the script's arguments.

How the script reaches the pod: the lorax image does not contain this checkout, so the pod's
command is a fixed bootstrap (:data:`POD_BOOTSTRAP`) that writes the two files from the
``LORAX_BUILD_SH`` and ``LORAX_S3_UPLOAD_PY`` environment variables (their text, read from the
checkout by the worker when the task runs) into a temp dir and runs the script from there. No
ConfigMap has to be kept in step with the checkout, and the pod spec shows exactly what ran.
Pod fields are Jinja templates, so :func:`script_files` refuses text containing Jinja markers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from releng.core import s3keys
from releng.core.arches import kube_arch
from releng.core.dnf import yumrepofs_url
from releng.core.layout import COMPOSE_ID_RE, ComposeLayout
from releng.core.profile import IsoImage, ReleaseProfile
from releng.core.tarsafe import GiB, Limits

INCLUDE_DIR = Path(__file__).resolve().parents[3] / "include" / "lorax"
BUILD_SCRIPT = INCLUDE_DIR / "build-lorax.sh"
# File name in the pod's temp dir -> the environment variable that carries its text.
SCRIPT_ENV = {"build-lorax.sh": "LORAX_BUILD_SH", "s3_upload.py": "LORAX_S3_UPLOAD_PY"}
POD_WORK_DIR = "/builddir"
POD_BOOTSTRAP = (
    'set -euo pipefail; d=$(mktemp -d); '
    'printf "%s\\n" "$LORAX_BUILD_SH" >"$d/build-lorax.sh"; '
    'printf "%s\\n" "$LORAX_S3_UPLOAD_PY" >"$d/s3_upload.py"; '
    'exec bash "$d/build-lorax.sh" "$@"'
)
POD_COMMAND = ["/bin/bash", "-c", POD_BOOTSTRAP, "build-lorax"]
RESULT_KEYS = ("arch", "key", "sha256", "size")
# A real lorax tarball is about 1-2 GB in a few hundred members.
TARBALL_LIMITS = Limits(max_member_size=8 * GiB, max_total_size=16 * GiB, max_members=50_000)
_JINJA_MARKERS = ("{{", "{%", "{#")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9._+-]+$")


class LoraxError(ValueError):
    """A lorax job cannot be built, or its result is not what the job asked for."""


def source_urls(profile: ReleaseProfile, arch: str, peridot_url: str, *, hashed: bool) -> list[str]:
    """The build system's repos lorax installs from (``iso.lorax.repos``), for this arch."""
    return [yumrepofs_url(peridot_url, profile.project_id, repo, arch, hashed=hashed)
            for repo in profile.lorax_settings().repos]


def lorax_options(profile: ReleaseProfile, arch: str, *, volid: str, sources: list[str], rc: bool) -> list[str]:
    """Lorax's options without ``--logfile`` and the output dir, which the script adds."""
    lx = profile.lorax_settings()
    options = [f"--product={profile.distname}", f"--version={profile.revision}", f"--release={profile.revision}"]
    if not rc:
        options.append("--isfinal")
    options += [f"--source={url}" for url in sources]
    if lx.squashfs_only:
        options.append("--squashfs-only")
    options += [f"--bugurl={profile.bugurl}", f"--variant={lx.variant}", "--nomacboot", f"--buildarch={arch}",
                f"--volid={volid}", f"--rootfs-size={lx.rootfs_size}"]
    return options


def compose_epoch(compose_id: str) -> int:
    """The Unix time of a compose id's UTC timestamp: one upload epoch for every arch of a compose."""
    m = COMPOSE_ID_RE.match(compose_id)
    if not m:
        raise LoraxError(f"compose id {compose_id!r} does not have the form <Short>-<X.Y>-<YYYYMMDD.HHMMSS>")
    return int(datetime.strptime(f"{m['date']}{m['time']}", "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class LoraxJob:
    """Everything one arch's build needs; the same for the pod and the local backend."""

    arch: str
    revision: str
    options: tuple[str, ...]
    bucket: str
    key: str
    removes: tuple[str, ...] = ()

    def env(self, work_dir: str) -> dict[str, str]:
        """The build script's environment (without credentials)."""
        return {"LORAX_ARCH": self.arch, "LORAX_REVISION": self.revision, "LORAX_S3_BUCKET": self.bucket,
                "LORAX_S3_KEY": self.key, "LORAX_WORK_DIR": work_dir, "LORAX_REMOVES": " ".join(self.removes)}


def lorax_job(layout: ComposeLayout, arch: str, *, rc: bool, hashed: bool, peridot_url: str, bucket: str,
              epoch: int) -> LoraxJob:
    profile = layout.profile
    if arch not in profile.arches:
        raise LoraxError(f"arch {arch!r} is not an arch of {profile.name} ({', '.join(profile.arches)})")
    for package in profile.lorax_settings().removes:
        if not _PACKAGE_RE.match(package):
            raise LoraxError(f"{profile.path}: iso.lorax.removes entry {package!r} is not a package name")
    options = lorax_options(profile, arch, volid=layout.volid(arch, rc),
                            sources=source_urls(profile, arch, peridot_url, hashed=hashed), rc=rc)
    return LoraxJob(arch, profile.revision, tuple(options), bucket,
                    s3keys.lorax_key(profile.major, profile.revision, arch, epoch),
                    tuple(profile.lorax_settings().removes))


def script_files() -> dict[str, str]:
    """The text of the build script and the uploader, checked to pass through Jinja unchanged.

    The final newline is left out (Jinja may drop it; the bootstrap's printf adds it back).
    """
    files = {}
    for name in SCRIPT_ENV:
        path = INCLUDE_DIR / name
        text = path.read_text(encoding="utf-8")
        for marker in _JINJA_MARKERS:
            if marker in text:
                raise LoraxError(f"{path} contains {marker!r}; pod fields are Jinja templates, so rewrite that "
                                 "part (e.g. '{ #' or a variable) or the pod would run altered text")
        files[name] = text.removesuffix("\n")
    return files


def pod_name(job: LoraxJob, major: int) -> str:
    """``buildiso-<major>-<kubearch>`` as empanadas' Jobs were named (pod names allow no '_')."""
    return f"buildiso-{major}-{kube_arch(job.arch)}"


def pod_kwargs(job: LoraxJob, major: int, files: dict[str, str]) -> dict:
    """Per-arch KubernetesPodOperator kwargs for ``expand_kwargs`` (plain values, JSON-safe)."""
    env = job.env(POD_WORK_DIR)
    env.update({SCRIPT_ENV[name]: text for name, text in files.items()})
    return {
        "name": pod_name(job, major),
        "arguments": list(job.options),
        "env_vars": env,
        "node_selector": {"kubernetes.io/arch": kube_arch(job.arch)},
        "labels": {"compose-arch": job.arch},
    }


def parse_result(line: str, job: LoraxJob) -> dict:
    """The build script's last stdout line, checked against the job: {"arch", "key", "sha256", "size"}."""
    try:
        result = json.loads(line)
    except ValueError:
        raise LoraxError(f"the build script's last output line is not JSON: {line[:200]!r}; "
                         "read the task log above it") from None
    if not isinstance(result, dict) or set(result) != set(RESULT_KEYS):
        raise LoraxError(f"the build script reported {result!r}; expected the keys {', '.join(RESULT_KEYS)}")
    check_result(result, job.arch, job.key)
    return result


def check_result(result: dict, arch: str, key: str | None = None) -> None:
    """Refuse a lorax result for another arch or key, or with a malformed checksum or size."""
    if result.get("arch") != arch:
        raise LoraxError(f"lorax result {result!r} is for arch {result.get('arch')!r}, not {arch!r}")
    if key is not None and result.get("key") != key:
        raise LoraxError(f"lorax result key {result.get('key')!r} is not the job's key {key!r}")
    if not isinstance(result.get("sha256"), str) or not _SHA256_RE.match(result["sha256"]):
        raise LoraxError(f"lorax result sha256 {result.get('sha256')!r} is not a SHA-256 hex digest")
    if not isinstance(result.get("size"), int) or isinstance(result["size"], bool) or result["size"] <= 0:
        raise LoraxError(f"lorax result size {result.get('size')!r} is not a positive number of bytes")


def installer_image(profile: ReleaseProfile) -> IsoImage:
    """The non-disc ``iso.images`` entry (``BaseOS``) whose repo trees receive the installer tree."""
    for image in profile.iso_images.values():
        if not image.disc:
            return image
    variant = profile.lorax_settings().variant
    return IsoImage(name=variant, disc=False, variant=variant, repos=(variant,))
