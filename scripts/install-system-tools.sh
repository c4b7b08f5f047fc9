#!/usr/bin/env bash
# Install the command-line tools the pipeline calls, on Debian/Ubuntu (apt) or
# Enterprise Linux/Fedora (dnf). Idempotent: does nothing when every tool is present.
# Usage: scripts/install-system-tools.sh [--with-test-extras]
#   --with-test-extras  also install OVMF, docker-compose (compose file check) and chromium (the browser test of
#                       the UI, tests/e2e/test_ui_browser.py, which drives /usr/bin/chromium through Playwright)
set -euo pipefail

extras=0
[[ "${1:-}" == "--with-test-extras" ]] && extras=1

# command -> why we need it; checked before and after installing
required=(rpm rpmbuild rpmsign createrepo_c modifyrepo_c dnf xorriso implantisomd5 checkisomd5
          mksquashfs unsquashfs mkfs.vfat mcopy mmd rsync gpg gpgconf isoinfo cpio git
          transmission-show transmission-cli qemu-system-x86_64 sha256sum)
extra_cmds=(docker-compose chromium)

missing() {
  local out=() c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || out+=("$c"); done
  # dnf reposync/repoclosure come from dnf-plugins-core, not from dnf itself
  if command -v dnf >/dev/null 2>&1 && ! dnf reposync --help >/dev/null 2>&1; then out+=("dnf-plugins-core"); fi
  echo "${out[@]:-}"
}

want=("${required[@]}")
(( extras )) && want+=("${extra_cmds[@]}")
todo=$(missing "${want[@]}")
[[ "$extras" == 1 && ! -e /usr/share/OVMF/OVMF_CODE_4M.fd && -e /etc/debian_version ]] && todo="$todo ovmf"
if [[ -z "${todo// /}" ]]; then
  echo "system tools: all present"
  exit 0
fi
echo "system tools: installing for: $todo"

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "error: not root and sudo is missing; run this script as root" >&2; exit 1; }
  SUDO=(sudo)
fi

if command -v apt-get >/dev/null 2>&1; then
  pkgs=(rpm rpm2cpio cpio createrepo-c dnf dnf-plugins-core xorriso isolinux syslinux-common
        syslinux-utils mtools dosfstools genisoimage isomd5sum squashfs-tools rsync gnupg git
        ca-certificates transmission-cli qemu-system-x86)
  "${SUDO[@]}" apt-get update -qq
  if (( extras )); then
    pkgs+=(ovmf docker-compose)
    # The browser test drives Debian's chromium package; Ubuntu has none (its chromium-browser is a snap).
    candidate=$(apt-cache policy chromium 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [[ -n "$candidate" && "$candidate" != "(none)" ]]; then
      pkgs+=(chromium)
    else
      echo "warning: no chromium package here (Debian has one); the browser test will fail, saying so" >&2
    fi
  fi
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
elif command -v dnf >/dev/null 2>&1; then
  pkgs=(rpm-build rpm-sign createrepo_c dnf-plugins-core xorriso syslinux mtools dosfstools
        genisoimage isomd5sum squashfs-tools rsync gnupg2 git cpio transmission-cli qemu-system-x86)
  (( extras )) && pkgs+=(edk2-ovmf)
  "${SUDO[@]}" dnf install -y "${pkgs[@]}"
  # docker-compose is not packaged on EL; the compose-file test falls back to a schema check.
  # chromium is in EPEL on EL: without it the browser test fails, saying so.
  if (( extras )) && ! "${SUDO[@]}" dnf install -y chromium; then
    echo "warning: chromium is not installable here (on EL it comes from EPEL); the browser test will fail" >&2
  fi
else
  echo "error: neither apt-get nor dnf found; install these by hand: $todo" >&2
  exit 1
fi

check=("${required[@]}")
[[ " ${pkgs[*]} " == *" chromium "* ]] && check+=(chromium)
still=$(missing "${check[@]}")
if [[ -n "${still// /}" ]]; then
  echo "error: still missing after install: $still" >&2
  exit 1
fi
echo "system tools: ok"
