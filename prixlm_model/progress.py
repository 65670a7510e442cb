"""Progress lines for long loops: done/total, rate and ETA, at a steady cadence in the task log.

Why: a user watching a training or a decode in the Airflow task log wants to know it moves and
when it ends, without one line per step drowning the log. ``Progress.update`` logs at most every
``every_s`` seconds, and always at the end.
"""

from __future__ import annotations

import logging
import time


def duration(seconds: float) -> str:
    """``3h05m``, ``4m07s`` or ``12s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    """``what``: ``done``/``total`` ``unit`` with rate and ETA, logged to ``logger`` every ``every_s`` seconds."""

    def __init__(self, what: str, total: int, unit: str, logger: logging.Logger, every_s: float = 30.0, done: int = 0) -> None:
        self.what, self.total, self.unit, self.logger, self.every_s = what, total, unit, logger, every_s
        self.done = self.started_at = done
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> str | None:
        """Record ``done`` units so far; return the line when one was logged."""
        self.done = done
        now = time.monotonic()
        if now - self.last < self.every_s and done < self.total:
            return None
        self.last = now
        rate = (done - self.started_at) / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        line = (f"{self.what}: {done}/{self.total} {self.unit} ({done / max(self.total, 1):.0%}), {rate:.3g} {self.unit}/s, "
                f"elapsed {duration(now - self.start)}, ETA {duration(eta) if eta != float('inf') else '?'}")
        self.logger.info(line)
        return line
