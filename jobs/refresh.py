"""refresh: is there a DBpedia release newer than the newest one acquired? (used by dbpedia_refresh)"""

from __future__ import annotations

import logging

from jobs.databus import SourceError, resolve_release, version_key
from jobs.stage import last_acquired_release
from prixlm_model.config import Settings

log = logging.getLogger(__name__)


def newer_release(settings: Settings) -> str | None:
    """The newest published release when it is newer than the last acquired one, else None.

    An unreachable source is not an error here (reliability #28): the log says why, nothing starts,
    and the next scheduled look tries again.
    """
    latest_settings = settings.acquire.model_copy(update={"release": "latest"})
    try:
        latest = resolve_release(latest_settings)
    except SourceError as error:
        log.warning("cannot reach the source to look for a new release; nothing starts: %s", error)
        return None
    acquired = last_acquired_release(settings)
    if acquired is not None and version_key(latest) <= version_key(acquired):
        log.info("newest published release %s is not newer than the last acquired %s; nothing starts", latest, acquired)
        return None
    log.info("new release %s (last acquired: %s); starting prix_lm_full", latest, acquired or "none")
    return latest
