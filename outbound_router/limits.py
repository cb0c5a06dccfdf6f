"""The open-files limit of a long-running service (`ari`, `agi`).

Every FastAGI session, ARI request connection and Redis connection is a file descriptor, and
a service started by systemd gets a soft limit of 1,024 by default (its hard limit is far
higher). At the limit the FastAGI server could not accept a session and dropped it without a
word; the calls failed as router errors. The services raise their soft limit to the hard one
(at most ``WANTED``) when they start, and say so when even that is low.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)

#: Enough for FastAGI's 1,000 sessions at once with room to spare; more is not asked for.
WANTED = 65_536
#: Below this, say so: the FastAGI server alone may hold 1,000 sessions.
ENOUGH = 4_096


def raise_open_files_limit(service: str) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = WANTED if hard == resource.RLIM_INFINITY else min(hard, WANTED)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d: %s", soft, exc)
    if soft != resource.RLIM_INFINITY and soft < ENOUGH:
        log.warning("%s: open files limit %d (hard limit %d): under load connections will be "
                    "refused; raise it (systemd: LimitNOFILE=%d, shell: ulimit -n)",
                    service, soft, hard, ENOUGH)
    return soft
