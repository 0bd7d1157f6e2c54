"""Progress of long work as periodic log lines: done, rate and, when the total is known, ETA.

Stages that can run for minutes (embedding, cross-fitting) report through here, so a silent stage is
a stuck one. Log lines rather than a terminal bar: the same output reads well in a terminal, in CI
logs and in Dataflow's worker logs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 30.0

_shared: dict[str, Progress] = {}
_shared_lock = threading.Lock()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Counts units of work and logs `what: done[/total], rate/s[, ETA]` at most every `interval_s`.

    Thread-safe: the threads of one worker process may share one (`shared`).
    """

    def __init__(self, what: str, total: int | None = None, unit: str = "items",
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 log: logging.Logger = logger) -> None:
        self.what, self.total, self.unit, self.interval_s = what, total, unit, interval_s
        self.clock, self.log = clock, log
        self.done = 0
        self.started = self.last_logged = clock()
        self._lock = threading.Lock()

    @classmethod
    def shared(cls, what: str, **kwargs) -> Progress:
        """The process-wide Progress named `what` (created on first use): one line per process, not
        per DoFn instance."""
        with _shared_lock:
            if what not in _shared:
                _shared[what] = cls(what, **kwargs)
            return _shared[what]

    def line(self) -> str:
        """`what: done[/total] unit, rate/s[, ETA]`."""
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        count = f"{self.done:,}" if self.total is None else f"{self.done:,}/{self.total:,}"
        text = f"{self.what}: {count} {self.unit}, {rate:.3g}/s, {_duration(elapsed)} elapsed"
        if self.total is not None and rate > 0:
            text += f", ETA {_duration(max(self.total - self.done, 0) / rate)}"
        return text

    def update(self, n: int = 1) -> None:
        """Count `n` more units; log when `interval_s` has passed since the last line, and at the total."""
        with self._lock:
            self.done += n
            now = self.clock()
            finished = self.total is not None and self.done >= self.total
            if not finished and now - self.last_logged < self.interval_s:
                return
            self.last_logged = now
            text = self.line()
        self.log.info(text)
