"""gunicorn's logger for `make serve` (``--logger-class``): the labelling page's poll kept out of the access
log, as config.request_log does for runserver."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

from config.request_log import is_quiet_poll


class QuietPollGunicornLogger(GunicornLogger):
    """gunicorn's logger (``--logger-class``), writing no access-log line for a successful poll unless
    gunicorn's log level is debug."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        status = int(str(getattr(resp, "status", "200")).split(None, 1)[0])
        quiet = is_quiet_poll(environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", ""), status)
        if quiet and not self.error_log.isEnabledFor(logging.DEBUG):
            return
        super().access(resp, req, environ, request_time)
