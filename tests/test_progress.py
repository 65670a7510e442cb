"""Progress lines: the cadence, the rate and the ETA a user reads in the task log."""

from __future__ import annotations

import logging
import time

from prixlm_model.progress import Progress, duration


def test_progress_logs_at_its_cadence_with_rate_and_eta(caplog) -> None:
    progress = Progress("decoding fr", 100, "queries", logging.getLogger("test"), every_s=0.2)
    with caplog.at_level(logging.INFO, "test"):
        assert progress.update(10) is None  # too soon after the start
        time.sleep(0.25)
        line = progress.update(50)
        assert progress.update(51) is None  # too soon after the last line
        last = progress.update(100)  # the end is always logged
    assert line is not None and line.startswith("decoding fr: 50/100 queries (50%)") and "queries/s" in line
    rate = float(line.split(", ")[1].split(" ")[0])
    assert 100 < rate < 250  # 50 queries in a little over 0.25 s
    assert "ETA 0s" in last and len(caplog.records) == 2
    assert duration(3725) == "1h02m" and duration(247) == "4m07s" and duration(12) == "12s"
