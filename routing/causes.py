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
