"""Ctrl-C and SIGTERM for a training run: stop promptly, but never in the middle of writing a checkpoint.

``STOP.install()`` (the trainer does it) routes SIGINT and SIGTERM to a handler that raises KeyboardInterrupt at
once, except inside ``STOP.held()`` blocks (checkpoint and weight writes), where it waits until the block ends. The
request is also remembered and ``STOP.check()`` raises it again at every training step: Python runs signal handlers
between any two bytecodes, also inside a ``__del__``, where a KeyboardInterrupt is printed and dropped, and a run
must not go on after Ctrl-C because of that.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["StopRequests", "STOP"]


class StopRequests:
    def __init__(self):
        self.requested: int | None = None
        self._depth = 0
        self._previous: dict = {}

    def install(self) -> None:
        """Take over SIGINT / SIGTERM (main thread only; elsewhere the defaults stay)."""
        self.requested, self._depth = None, 0
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_signal(self, number, frame) -> None:
        self.requested = number
        if self._depth == 0:
            raise KeyboardInterrupt

    @contextmanager
    def held(self):
        """A block that a stop request must not cut short; the request is acted on when it ends."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.check()

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt


STOP = StopRequests()
