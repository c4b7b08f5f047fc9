"""build_dvd_iso: one DVD per (arch, image) by replaying lorax's boot.iso with xorriso."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.operators.common import as_bool, resolve_compose


class BuildDvdIsoOperator(BaseOperator):
    """build_dvd_iso: one DVD ISO of a compose (``releng.core.compose.build_dvd_iso``).

    Writes ``work/isos/<arch>/<Short>-<X.Y>[-<RC>]-<arch>-<image>.iso`` with its ``.manifest``,
    ``.CHECKSUM`` and the generic and latest links; returns
    ``{"arch", "image", "iso", "size", "sha256", "volid"}``. Wrong inputs (no boot.iso, a volume id
    that is not the release's, a broken boot setup) fail without retry. Run it in the ``iso_build`` pool.

    :param arch: the arch to build (templated)
    :param image: the profile's ``iso.images`` entry, e.g. ``dvd`` (templated)
    :param summary: prepare_compose's summary (release, top, rc); fills release, compose and rc (templated)
    :param release: release profile name, e.g. ``el9`` (templated)
    :param compose: compose id or the compose's top directory (templated)
    :param rc: release candidate: the volume id and ISO name carry the profile's rclvl (templated)
    :param lorax_tree: the unpacked lorax tree; default ``work/lorax/<arch>/lorax`` (templated)
    """

    template_fields = ("arch", "image", "summary", "release", "compose", "rc", "lorax_tree")
    ui_color = "#fdf1d8"

    def __init__(self, *, arch: str, image: str, summary: Mapping | None = None, release: str | None = None,
                 compose: str | None = None, rc: bool | str | None = None, lorax_tree: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.arch = arch
        self.image = image
        self.summary = summary
        self.release = release
        self.compose = compose
        self.rc = rc
        self.lorax_tree = lorax_tree

    def execute(self, context: Context) -> dict:
        from releng.core.compose.build_dvd_iso import IsoInputError, build_dvd
        from releng.core.layout import LayoutError
        layout = resolve_compose(self.summary, self.release, self.compose)
        rc = self.rc if self.rc is not None else (self.summary or {}).get("rc", False)
        rc = as_bool(rc, "rc")
        self.log.info("building the %s %s ISO of %s (rc=%s)", self.arch, self.image, layout.top, rc)
        try:
            result = build_dvd(layout, self.arch, self.image, rc,
                               lorax_tree=Path(self.lorax_tree) if self.lorax_tree else None, logger=self.log)
        except (IsoInputError, LayoutError) as exc:
            raise AirflowFailException(str(exc)) from None
        return result.to_xcom()
