"""What core functions log through: a ``logging.Logger`` or an Airflow task's ``self.log``."""

from __future__ import annotations

from typing import Any, Protocol


class Logger(Protocol):
    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...
