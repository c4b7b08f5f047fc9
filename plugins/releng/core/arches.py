"""Architecture facts: the one map from RPM arches to Kubernetes node arches."""

from __future__ import annotations

# RPM arch -> Kubernetes/Go arch (the kubernetes.io/arch node label).
KUBE_ARCH: dict[str, str] = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}

# Arches a release can ship as primary (compose) arches.
PRIMARY_ARCHES: tuple[str, ...] = tuple(KUBE_ARCH)

# Multilib companions: a repo marked multilib also syncs these next to the primary arch.
MULTILIB_ARCHES: dict[str, tuple[str, ...]] = {"x86_64": ("i686",)}

# Arches an RPM in a repo of the primary arch may carry (dnf --arch for repoclosure).
COMPATIBLE_ARCHES: dict[str, tuple[str, ...]] = {
    "x86_64": ("x86_64", "athlon", "i686", "i586", "i486", "i386", "noarch"),
    "aarch64": ("aarch64", "noarch"),
    "ppc64le": ("ppc64le", "noarch"),
    "s390x": ("s390x", "noarch"),
    "riscv64": ("riscv64", "noarch"),
    "i686": ("i686", "i586", "i486", "i386", "athlon", "noarch"),
}


def kube_arch(arch: str) -> str:
    """The Kubernetes node arch for an RPM arch; raises ValueError naming the known arches."""
    try:
        return KUBE_ARCH[arch]
    except KeyError:
        raise ValueError(f"unknown arch {arch!r}; known arches: {', '.join(KUBE_ARCH)}") from None
