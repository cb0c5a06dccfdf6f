"""Q.850 hangup causes (Asterisk's ``AST_CAUSE_*`` values): the one home of the numbers the
core judges attempts by and hangs callers up with, for both paths.

The SIP answer a phone gets for each cause it is hung up with was checked on the lab (ARI
``DELETE /channels/{id}?reason_code=N``, dialplan ``Hangup(N)``): 1 -> 404, 3 -> 404,
17 -> 486, 19 -> 480, 21 -> 403, 28 -> 484, 34 -> 503, 127 -> 500.
"""

from __future__ import annotations

NO_ROUTE_DESTINATION = 3
NORMAL_CLEARING = 16
USER_BUSY = 17
NO_USER_RESPONSE = 18
NO_ANSWER = 19
CALL_REJECTED = 21
INVALID_NUMBER_FORMAT = 28
CONGESTION = 34
INTERWORKING = 127

#: The router cannot decide (no routing table loaded, a bad request): congestion, a SIP 503,
#: which a phone or proxy may retry.
ROUTER_ERROR = CONGESTION

#: The cause Asterisk (chan_pjsip) gives a channel that a SIP final response ended, for the
#: codes of SPEC section 3's table (the reference recordings show 404 -> 1, 480 -> 19,
#: 486 -> 17 and 503 -> 34). An attempt judged from its last SIP response alone (its
#: ChannelDestroyed was lost: docs/ari.md) gets its cause from here, so that its trace reads
#: as any other's and a carrier's override by Q.850 applies to it too.
SIP_CAUSES = {
    401: 21, 403: 21, 407: 21, 603: 21,
    404: 1, 485: 1, 604: 1,
    484: 28,
    410: 22,
    488: 58, 606: 58,
    486: 17, 600: 17,
    480: 19,
    487: 127,
    408: 18, 503: 34, 500: 38, 502: 27, 504: 102,
}
