"""The embedded broker: kombu's filesystem transport, with each message published atomically.

kombu writes a message by opening its final file name (``<ms>_<uuid>.<queue>.msg``) and then writing into
it. A worker polling the folder may move and read that file in between, gets an empty payload and dies
with ``JSONDecodeError: Expecting value`` (celery/kombu#1551). With three workers polling one folder
(``make run``) this happened within minutes: the ``train`` worker died on the pretraining the first batch
had just released. Here the message is written under a name no worker reads (it does not end in
``.<queue>.msg``) and then renamed into place, which is atomic on one filesystem."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class AtomicChannel(filesystem.Channel):
    # As kombu's filesystem Channel._put (whose stubs disagree with the virtual base's on the name).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """Put ``payload`` onto ``queue``: written aside, then renamed to the name workers look for."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"_partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb", buffering=0) as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    Channel = AtomicChannel

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # A folder has no host. kombu's virtual transports default to 'localhost', and a connection to
        # "filesystem://" (no host) then warns "No hostname was supplied. Reverting to default
        # 'localhost'" in every process that sends a job; with no default there is nothing to revert to.
        return {"port": self.default_port}


__all__ = ["AtomicChannel", "AtomicFilesystemTransport"]
