"""Command line for release engineers and CI: ``python -m releng validate [PATH...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from releng.core.profile import ProfileError, load_profile, profile_paths
from releng.core.settings import Settings, SettingsError


def _validate(paths: list[str]) -> int:
    if not paths:
        try:
            paths = [str(Settings.from_env().config_dir)]
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = profile_paths(path)
            if not found:
                print(f"{path}: no *.yaml release profiles in this directory", file=sys.stderr)
                return 1
            files.extend(found)
        else:
            files.append(path)
    failed = 0
    for path in files:
        try:
            profile = load_profile(path)
        except ProfileError as exc:
            failed += 1
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            continue
        kind = f"SIG {profile.sig}" if profile.sig else f"{profile.channel} channel"
        print(
            f"{path}: ok ({profile.fullname}, {kind}, profile {profile.profile}, "
            f"{len(profile.arches)} arches, {len(profile.repos)} repos)"
        )
    if failed:
        print(f"{failed} of {len(files)} profile(s) invalid", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m releng", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    validate = sub.add_parser(
        "validate", help="check release profiles; exit 0 when all are valid",
        description="Validate release profiles (files or directories of *.yaml). "
        "Without a path, validates RELENG_CONFIG_DIR.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH")
    args = parser.parse_args(argv)
    if args.command == "validate":
        return _validate(args.paths)
    return 2


if __name__ == "__main__":
    sys.exit(main())
