"""SLURM's preemption/time-out warning (USR2), deferred to the next update boundary so the trainer checkpoints first.

submitit installs a USR2 handler that requeues the job and exits at once. The trainer wraps it: the signal only
sets a flag; after the update in progress the trainer writes checkpoint_last.pt and then hands the signal to
submitit, which requeues the job into the same folder, where the re-run resumes from that checkpoint.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any, Optional

log = logging.getLogger("runner.train")


class PreemptionGuard:
    """Holds SIGUSR2 until :meth:`hand_over`; a no-op outside a job that has a USR2 handler (e.g. submitit's)."""

    def __init__(self, signum: int = signal.SIGUSR2):
        self.signum = signum
        self.previous: Any = signal.getsignal(signum)
        self.pending: Optional[tuple[int, Optional[FrameType]]] = None
        self.active = callable(self.previous)
        if self.active:
            signal.signal(signum, self._hold)

    def _hold(self, signum: int, frame: Optional[FrameType]) -> None:
        log.warning(
            "received %s (preemption or time-out): checkpointing after this update", signal.Signals(signum).name
        )
        self.pending = (signum, frame)

    @property
    def requested(self) -> bool:
        return self.pending is not None

    def hand_over(self) -> None:
        """Restore the original handler and give it the held signal (submitit requeues and exits)."""
        signal.signal(self.signum, self.previous)
        if self.pending is not None:
            self.previous(*self.pending)

    def close(self) -> None:
        """Stop holding the signal (training is over)."""
        if self.active:
            signal.signal(self.signum, self.previous)
