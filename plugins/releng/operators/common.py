"""What every operator needs first: the site settings and a release profile, or a clear, final failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException

from releng.core.profile import ProfileError, ReleaseProfile, find_profile
from releng.core.settings import Settings, SettingsError, settings

if TYPE_CHECKING:
    from releng.core.layout import ComposeLayout


def site_settings() -> Settings:
    try:
        return settings()
    except SettingsError as exc:
        raise AirflowFailException(f"site settings are invalid: {exc}") from None


def load_release(name: str) -> ReleaseProfile:
    """The release profile ``name`` from RELENG_CONFIG_DIR; a bad or unknown profile fails the task for good."""
    config_dir = site_settings().config_dir
    try:
        return find_profile(name, config_dir)
    except ProfileError as exc:
        raise AirflowFailException(
            f"release profile {name!r} cannot be used (RELENG_CONFIG_DIR={config_dir}):\n{exc}\n"
            "Fix the profile (python -m releng validate) or choose another release."
        ) from None


def as_bool(value: Any, what: str) -> bool:
    """A flag that may arrive rendered as text (``"True"``, ``"false"``) from a template."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise AirflowFailException(f"{what}={value!r} is not a boolean; use true or false")


def resolve_compose(summary: Mapping | None, release: str | None, compose: str | None) -> ComposeLayout:
    """The compose's layout from a prepare_compose summary or from (release, compose id or top dir)."""
    from releng.core.compose.prepare_compose import compose_layout
    from releng.core.layout import LayoutError
    if summary:
        release = release or summary.get("release")
        compose = compose or summary.get("top") or summary.get("compose_id")
    if not release or not compose:
        raise AirflowFailException("no compose given: pass summary (prepare_compose's XCom) or release and compose "
                                   "(a compose id or the compose's top directory)")
    profile = load_release(release)
    try:
        return compose_layout(profile, compose, site_settings().compose_root)
    except LayoutError as exc:
        raise AirflowFailException(str(exc)) from None


class SummaryOperator(BaseOperator):
    """A step that acts on the run its first task prepared; the DAG passes that task's output in.

    :param summary: the preparing task's summary (``prepare.output``)
    """

    template_fields: Sequence[str] = ("summary",)

    def __init__(self, *, summary: Mapping | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.summary = summary

    def require_summary(self) -> Mapping:
        if not self.summary:
            raise AirflowFailException("no summary from the preparing task: it did not succeed, or the DAG does not "
                                       "pass its output as summary")
        return self.summary


class WorkListOperator(SummaryOperator):
    """plan.<kind>: one work list of the run for a mapped task (Airflow maps only over return values).

    :param kind: which work list (one of the subclass's ``kinds``)
    """

    kinds: Sequence[str] = ()
    ui_color = "#f4f4f4"

    def __init__(self, *, kind: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in self.kinds:
            raise ValueError(f"unknown work list {kind!r}; one of {', '.join(self.kinds)}")
        self.kind = kind

    def work_list(self, summary: Mapping) -> list[dict]:
        raise NotImplementedError

    def execute(self, context: Context) -> list[dict]:
        items = self.work_list(self.require_summary())
        self.log.info("%d %s items", len(items), self.kind)
        return items
