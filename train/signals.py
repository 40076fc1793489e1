"""Stop requests for a training run: Ctrl-C stops at once, a preemption (SIGTERM / SIGUSR1) checkpoints first.

``STOP.install()`` (the trainer does it) routes three signals:

* SIGINT (Ctrl-C) raises KeyboardInterrupt at once, except inside ``STOP.held()`` blocks (checkpoint and weight
  writes), where it waits until the block ends. The request is remembered and ``STOP.check()`` raises it again at
  every training step: Python runs signal handlers between any two bytecodes, also inside a ``__del__``, where a
  KeyboardInterrupt is printed and dropped, and a run must not go on after Ctrl-C because of that.
* SIGTERM (what SLURM and Kubernetes send before SIGKILL) and SIGUSR1 (``sbatch --signal=USR1@90``) only set
  ``STOP.preempted``: the training loop reads it at its next optimiser update (all processes agree on one,
  ``engine.stop_agreed``), writes a step checkpoint there and stops with ``Preempted``; the command exits 143
  (SIGTERM, 128 + 15) or 0 (SIGUSR1), and ``--resume auto`` continues at the exact batch.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

__all__ = ["StopRequests", "STOP", "Preempted", "PREEMPT_SIGNALS", "EXIT_CODES"]

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
EXIT_CODES = {signal.SIGTERM: 143, signal.SIGUSR1: 0}   # the exit status after a preemption checkpoint


class Preempted(Exception):
    """The run stopped on SIGTERM / SIGUSR1 after writing the checkpoint ``folder`` at optimiser step ``step``."""

    def __init__(self, signum: int, step: int, folder):
        super().__init__(f"stopped by {signal.Signals(signum).name} at optimiser step {step}; checkpoint {folder}")
        self.signum, self.step, self.folder = signum, step, folder


class StopRequests:
    def __init__(self):
        self.requested: int | None = None    # SIGINT received
        self.preempted: int | None = None    # SIGTERM / SIGUSR1 received: checkpoint, then stop
        self._depth = 0
        self._previous: dict = {}

    def install(self) -> None:
        """Take over SIGINT, SIGTERM and SIGUSR1 (main thread only; elsewhere the defaults stay)."""
        self.requested, self.preempted, self._depth = None, None, 0
        if threading.current_thread() is threading.main_thread():
            self._previous = {signal.SIGINT: signal.signal(signal.SIGINT, self._on_signal)}
            self._previous.update({sig: signal.signal(sig, self._on_preempt) for sig in PREEMPT_SIGNALS})

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _on_preempt(self, number, frame) -> None:
        self.preempted = self.preempted or number

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
