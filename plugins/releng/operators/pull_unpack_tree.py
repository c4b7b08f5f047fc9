"""pull_unpack_tree: one arch's lorax result from S3 into the compose (``releng.core.compose.pull_unpack_tree``).

DAG wiring: pair each lorax result with its planned arch (``zip`` keeps element i with element i;
``expand`` would build a cross product)::

    pull = PullUnpackTreeOperator.partial(task_id="pull_unpack_tree", map_index_template="{{ task.arch }}") \\
        .expand_kwargs(build_lorax.output.zip(items).map(pull_unpack_kwargs))
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core.settings import settings
from releng.hooks.s3 import s3_hook
from releng.operators.common import load_release

if TYPE_CHECKING:
    from releng.core.layout import ComposeLayout


def pull_unpack_kwargs(pair: tuple[dict, dict]) -> dict:
    """``.map()`` callable: (lorax result, planned arch item) -> PullUnpackTreeOperator kwargs."""
    result, item = pair
    summary = item["summary"]
    return {"arch": item["arch"], "release": summary["release"], "compose_id": summary["compose_id"],
            "compose_root": summary["compose_root"], "rc": bool(summary["rc"]),
            "kickstart": bool(summary.get("full_run", True)), "lorax_result": result}


def _flag(value: bool | str) -> bool:
    return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)


class PullUnpackTreeOperator(BaseOperator):
    """pull_unpack_tree: one arch's lorax tarball from S3, verified and unpacked; boot ISO and installer tree placed.

    Idempotent: every file is placed through a temp name and a rename, and a rerun converges.
    Returns ``{"arch", "volid", "boot_iso", "lorax_dir", "tree_files"}``.

    :param arch: RPM arch
    :param release: release profile name (``el9``)
    :param compose_id: the compose's id (``Rocky-9.7-20250101.000000``)
    :param compose_root: compose root (default: ``RELENG_COMPOSE_ROOT``)
    :param rc: release candidate (boot ISO name and volume id carry the RC level)
    :param lorax_result: the lorax task's XCom ``{"arch", "key", "sha256", "size"}``
    :param newest: without ``lorax_result``, take the newest upload under the arch's prefix (by epoch)
    :param kickstart: also merge into ``BaseOS/<arch>/kickstart`` (full runs)
    :param bucket: S3 bucket (default: ``RELENG_S3_BUCKET``)
    :param aws_conn_id: Airflow AWS connection (default: ``RELENG_S3_CONN_ID``)
    """

    template_fields: Sequence[str] = ("arch", "release", "compose_id", "compose_root", "rc", "lorax_result",
                                      "newest", "kickstart", "bucket")
    ui_color = "#e0ecf8"

    def __init__(self, *, arch: str, release: str, compose_id: str, compose_root: str | None = None,
                 rc: bool | str = False, lorax_result: dict | None = None, newest: bool | str = False,
                 kickstart: bool | str = True, bucket: str | None = None, aws_conn_id: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.arch = arch
        self.release = release
        self.compose_id = compose_id
        self.compose_root = compose_root
        self.rc = rc
        self.lorax_result = lorax_result
        self.newest = newest
        self.kickstart = kickstart
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict:
        from releng.core.compose.pull_unpack_tree import UnpackInputError, pull_unpack_tree
        s = settings()
        layout = self._layout()
        try:
            return pull_unpack_tree(layout, self.arch, s3_hook(self.aws_conn_id), self.bucket or s.s3_bucket,
                                    rc=_flag(self.rc), lorax_result=self.lorax_result, newest=_flag(self.newest),
                                    kickstart=_flag(self.kickstart), logger=self.log)
        except UnpackInputError as exc:
            raise AirflowFailException(str(exc)) from None

    def _layout(self) -> ComposeLayout:
        from releng.core.layout import ComposeLayout, LayoutError
        s = settings()
        profile = load_release(self.release)
        try:
            layout = ComposeLayout(profile, Path(self.compose_root or s.compose_root), self.compose_id)
            layout.lorax_dir(self.arch)
        except LayoutError as exc:
            raise AirflowFailException(f"cannot place the lorax tree for {self.arch}: {exc}") from None
        if self.arch not in profile.arches:
            raise AirflowFailException(f"arch {self.arch!r} is not an arch of {profile.name} "
                                       f"({', '.join(profile.arches)})")
        if not layout.top.is_dir():
            raise AirflowFailException(f"compose directory {layout.top} does not exist; prepare_compose creates it")
        return layout
