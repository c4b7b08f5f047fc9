#!/usr/bin/env bash
# build-lorax.sh: build one arch's lorax tree, pack it, upload it to S3 and report where it went.
#
# The same script runs in the lorax pod (RELENG_LORAX_BACKEND=kubernetes) and on the Airflow worker
# (RELENG_LORAX_BACKEND=local); releng.core.lorax documents how it reaches the pod.
#
# Usage: build-lorax.sh LORAX_OPTION...
#   The arguments are lorax's options exactly as releng.core.lorax.lorax_options() builds them
#   (as empanadas passes them: --product --version --release [--isfinal] --source... [--squashfs-only] --bugurl
#   --variant --nomacboot --buildarch --volid --rootfs-size). They have one source, that function;
#   this script only adds --logfile, the output directory and, for LORAX_REMOVES, --sharedir.
#
# Environment (all required unless marked optional):
#   LORAX_ARCH        RPM arch to build (x86_64, aarch64, ppc64le, s390x); lorax builds only the host's arch
#   LORAX_REVISION    release revision, e.g. 9.7; names the tarball lorax-<revision>-<arch>.tar.gz
#   LORAX_S3_BUCKET   bucket the tarball is uploaded to
#   LORAX_S3_KEY      exact object key (releng.core.s3keys.lorax_key); must end with /<tarball name>
#   LORAX_WORK_DIR    scratch directory; lorax/, the log and the tarball are (re)made inside it
#   LORAX_REMOVES     optional: space-separated packages whose lines are commented out of a private
#                     copy of lorax's 80-rhel runtime-install.tmpl (never the system's file)
#   LORAX_PYTHON      optional: python3 with boto3 (and productmd for the stand-in); default python3
#   LORAX_XCOM_DIR    optional: where the result JSON goes when the directory exists; default /airflow/xcom
#   LORAX_ALLOW_STANDIN optional: 1 lets the stand-in run where lorax is missing (a test site: the worker sets it
#                     from RELENG_TEST_SITE=true); otherwise a missing lorax is an error
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN, AWS_ENDPOINT_URL,
#   AWS_DEFAULT_REGION  S3 credentials and endpoint (the pod gets them from a Kubernetes secret)
#
# Runs `lorax` when it is on PATH, otherwise, on a test site only, the stand-in lorax-standin next to this
# script (loudly).
# Then: images/boot.iso.manifest (sorted ISO paths), chmod 700 -> 755, tar czf, upload with the
# sha256 in the object metadata (s3_upload.py verifies the upload), and the result
# {"arch","key","sha256","size"} written to $LORAX_XCOM_DIR/return.json when that directory exists
# (/airflow/xcom: the KubernetesPodOperator XCom sidecar's volume) and printed as the last stdout line.
# Any failed step fails the script (empanadas' Job had no set -e and reported success).
set -euo pipefail

die() {
    echo "build-lorax: ERROR: $*" >&2
    exit 1
}

need() {
    local name=$1
    [[ -n "${!name:-}" ]] || die "environment variable $name is not set; the lorax task sets it (see the header of this script)"
}

for var in LORAX_ARCH LORAX_REVISION LORAX_S3_BUCKET LORAX_S3_KEY LORAX_WORK_DIR; do
    need "$var"
done
[[ $# -gt 0 ]] || die "no lorax options given; pass releng.core.lorax.lorax_options() as arguments"

arch=$LORAX_ARCH
[[ $arch =~ ^[a-z0-9_]+$ ]] || die "LORAX_ARCH='$arch' is not an RPM arch name"
[[ $LORAX_REVISION =~ ^[0-9]+\.[0-9]+$ ]] || die "LORAX_REVISION='$LORAX_REVISION' is not a revision like 9.7"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
py=${LORAX_PYTHON:-python3}
work=$LORAX_WORK_DIR
tarball="lorax-$LORAX_REVISION-$arch.tar.gz"
log="$work/lorax-$arch.log"
out="$work/lorax"
[[ $LORAX_S3_KEY == */"$tarball" ]] || die "LORAX_S3_KEY='$LORAX_S3_KEY' does not end with /$tarball; build it with releng.core.s3keys.lorax_key"

buildarch=""
for option; do
    [[ $option == --buildarch=* ]] && buildarch=${option#--buildarch=}
done
[[ $buildarch == "$arch" ]] || die "the lorax options say --buildarch='$buildarch' but LORAX_ARCH='$arch'; pass the options of releng.core.lorax.lorax_options for this arch"

mkdir -p "$work"
# A retry starts clean: only the paths this script makes are removed.
rm -rf -- "$out" "$log" "${work:?}/$tarball" "$work/sharedir"

if command -v lorax >/dev/null 2>&1; then
    lorax_cmd=(lorax)
    standin=""
    host=$(uname -m)
    [[ $host == "$arch" ]] || die "lorax builds only this machine's arch ($host), not $arch; the pod must run on a kubernetes.io/arch node of $arch (check the node selector)"
else
    [[ ${LORAX_ALLOW_STANDIN:-} == 1 ]] || die "lorax is not installed here; install lorax (Enterprise Linux: dnf install lorax lorax-templates-rhel) in the lorax image or on the worker. The lorax stand-in only builds fixture boot trees and runs only on a test site (RELENG_TEST_SITE=true)"
    standin="$here/lorax-standin"
    [[ -f $standin ]] || die "lorax is not on PATH and the stand-in $standin is missing; install lorax (Enterprise Linux) or run from the project checkout"
    echo "!!!!!!!! build-lorax: lorax is not installed; USING THE LORAX STAND-IN $standin: NOT lorax, the boot tree is built from fixture files !!!!!!!!" >&2
    lorax_cmd=("$py" "$standin")
fi

extra=()
if [[ -n "${LORAX_REMOVES:-}" ]]; then
    if [[ -n $standin ]]; then
        echo "build-lorax: the stand-in has no runtime templates; LORAX_REMOVES ($LORAX_REMOVES) has no effect" >&2
    else
        templates=/usr/share/lorax/templates.d/80-rhel
        [[ -f $templates/runtime-install.tmpl ]] || die "$templates/runtime-install.tmpl is missing; install lorax-templates-rhel in the lorax image"
        cp -a "$templates" "$work/sharedir"
        for pkg in $LORAX_REMOVES; do
            [[ $pkg =~ ^[A-Za-z0-9._+-]+$ ]] || die "LORAX_REMOVES entry '$pkg' is not a package name"
            awk -v pkg="$pkg" 'index($0, pkg) && !/^#/ { print "#" $0; next } { print }' \
                "$work/sharedir/runtime-install.tmpl" >"$work/sharedir/runtime-install.tmpl.new"
            mv "$work/sharedir/runtime-install.tmpl.new" "$work/sharedir/runtime-install.tmpl"
            echo "build-lorax: removed $pkg from the runtime template" >&2
        done
        extra=(--sharedir="$work/sharedir")
    fi
fi

echo "build-lorax: building $arch: ${lorax_cmd[*]} $* ${extra[*]} --logfile=$log $out" >&2
started=$SECONDS
status=0
"${lorax_cmd[@]}" "$@" "${extra[@]}" --logfile="$log" "$out" || status=$?
if [[ $status -ne 0 ]]; then
    if [[ -f $log ]]; then
        echo "build-lorax: last lines of $log:" >&2
        tail -n 40 "$log" >&2
    fi
    die "lorax failed for $arch with exit status $status; nothing was uploaded. Read the lorax log above, fix the cause (repos, templates, disk) and retry the task"
fi
[[ -f $out/.treeinfo && -f $out/images/boot.iso ]] || die "lorax exited 0 but $out has no .treeinfo or images/boot.iso; nothing was uploaded"
echo "build-lorax: lorax finished in $((SECONDS - started)) s" >&2

# Manifest: every path in boot.iso, sorted (the DVD build excludes these from its grafts).
manifest="$out/images/boot.iso.manifest"
xorriso -indev "$out/images/boot.iso" -find / 2>"$work/xorriso.err" >"$manifest.raw" \
    || die "xorriso could not read $out/images/boot.iso: $(cat "$work/xorriso.err")"
sed -e "1{/^'\/'\$/d}" -e "s/^'//" -e "s/'\$//" "$manifest.raw" | LC_ALL=C sort >"$manifest"
rm -f "$manifest.raw" "$work/xorriso.err"
[[ -s $manifest ]] || die "boot.iso lists no files; $out/images/boot.iso is not an ISO image"
echo "build-lorax: $(wc -l <"$manifest") paths in $manifest" >&2

find "$out" -perm 0700 -exec chmod 0755 {} +

tar -C "$work" --sort=name --owner=0 --group=0 --numeric-owner -czf "$work/$tarball" lorax "lorax-$arch.log"
echo "build-lorax: packed $work/$tarball ($(stat -c %s "$work/$tarball") bytes)" >&2

result=$("$py" "$here/s3_upload.py" --arch "$arch" --bucket "$LORAX_S3_BUCKET" --key "$LORAX_S3_KEY" "$work/$tarball")
xcom=${LORAX_XCOM_DIR:-/airflow/xcom}
if [[ -d $xcom ]]; then
    printf '%s\n' "$result" >"$xcom/return.json"
fi
printf '%s\n' "$result"
