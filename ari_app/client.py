"""A small typed ARI client: the REST calls the router needs and one supervised events
websocket.

Why not a library: ari-py does not import on Python 3, ari-client 0.9 spins on a closed
websocket and asyncari hangs after a drop (issue 4). This client does little on purpose:

* REST: keep-alive connections of :class:`ari_app.http.HttpPool` (a lean HTTP/1.1 client:
  aiohttp's per-request CPU was most of the router's), HTTP basic auth in a header (never in a
  URL, so never in a log line; not ``api_key=`` in the query as many clients do), errors
  raised as :class:`AriError` subclasses.
* Events: :meth:`AriClient.run_events` keeps one aiohttp websocket open for the application,
  reconnects with capped exponential backoff and jitter, pings it (heartbeat) so a dead peer
  is noticed, and hands every decoded message to a *synchronous* callback: the callback only
  routes the event to a queue, so a slow call can never hold up the reader. After every
  (re)connect it runs an ``on_connected`` coroutine (the app reconciles what it missed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from ari_app import events as ev
from ari_app.http import HttpError, HttpPool
from routing.variables import assignment

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def _one_line(text: str) -> str:
    """An HTML or text page as one short log line."""
    return " ".join(re.sub(r"<[^>]*>", " ", text).split())[:200]


def _log_if_failed(task: asyncio.Task[None]) -> None:
    """What runs after a connect (the reconcile) failing on something else than ARI: logged
    when it happens, not as "Task exception was never retrieved" whenever it is collected."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("after connecting to ARI: %s: %s", type(exc).__name__, exc, exc_info=exc)


class AriError(Exception):
    """A REST call failed: Asterisk answered with an error status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {message}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message


class AriNotFound(AriError):
    """404: the channel or bridge is gone (often fine: it hung up first)."""


class AriConflict(AriError):
    """409: e.g. the channel is not in Stasis yet, or is no longer in the 'Down' state."""


class AriRefused(AriError):
    """401 or 403: Asterisk refuses the router's credentials (a password changed in ari.conf
    after the websocket connected: Asterisk checks it per request, the websocket only at its
    handshake) or the user's rights (``read_only``)."""


class AriUnavailable(Exception):
    """Asterisk could not be reached (connection refused, reset, timeout)."""


async def quietly(what: str, request: Awaitable[Any],
                  logger: logging.Logger | logging.LoggerAdapter[Any],
                  gone: tuple[type[AriError], ...] = ()) -> bool:
    """Await a REST call whose failure only matters for the log: 404 (the channel or bridge
    is already gone) and the errors in ``gone`` are silent, any other failure a warning.
    True when it succeeded."""
    try:
        await request
        return True
    except (AriError, AriUnavailable) as exc:
        if not isinstance(exc, (AriNotFound, *gone)):
            logger.warning("%s failed: %s", what, exc)
        return False


#: Bytes of a request body sent at most: Asterisk's HTTP server refuses one past 40,960
#: (413 "Request body too large", measured on Asterisk 22.10).
BODY_MAX = 32_768


def _body_size(values: Mapping[str, str]) -> int:
    name, value = assignment(values)
    return len(json.dumps({"variable": name, "value": value}).encode())


def _within_body_max(values: Mapping[str, str]) -> list[dict[str, str]]:
    """``values`` in groups whose ``set_variable`` body fits BODY_MAX (one group, but for the
    ROUTER_* of a plan of many attempts). A value too large alone is a group of its own."""
    # Escaped for ARRAY() and JSON, a character takes at most 12 bytes (one beyond the BMP:
    # two \uXXXX): the usual write is far below that bound, and is not encoded twice.
    if sum(len(k) + len(v) for k, v in values.items()) * 12 + 64 <= BODY_MAX:
        return [dict(values)] if values else []
    groups: list[dict[str, str]] = []
    group: dict[str, str] = {}
    for name, value in values.items():
        if group and _body_size({**group, name: value}) > BODY_MAX:
            groups.append(group)
            group = {}
        group[name] = value
    groups.append(group)
    return groups


def public_url(url: URL) -> str:
    """``url`` without user info or query: safe to log."""
    return str(url.with_user(None).with_password(None).with_query(None))


def ari_base_url(url: str) -> URL:
    """``ARI_URL`` (``http://127.0.0.1:8088``, with or without ``/ari``) -> ``.../ari``."""
    u = URL(url)
    if u.scheme not in ("http", "https") or not u.host:
        raise ValueError(f"ARI_URL must be an http(s) URL, got {public_url(u)!r}")
    path = u.path.rstrip("/")
    if not path.endswith("/ari"):
        path = f"{path}/ari"
    return u.with_user(None).with_password(None).with_query(None).with_path(path)


#: A websocket up at least this long (seconds) that drops is made again without a delay.
RECONNECT_AT_ONCE_AFTER = 1.0


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling up to ``maximum``, with +-``jitter`` (fraction)."""

    initial: float = 0.2
    # Every second without the app is a second in which Stasis() fails and phones get 503:
    # after an Asterisk restart the app is back within 2 s. (An attempt costs a refused TCP
    # connection, and the outage is logged once.)
    maximum: float = 2.0
    jitter: float = 0.2

    def delays(self, rng: random.Random) -> Callable[[], float]:
        current = self.initial

        def next_delay() -> float:
            nonlocal current
            delay = current * (1 + rng.uniform(-self.jitter, self.jitter))
            current = min(current * 2, self.maximum)
            return delay

        return next_delay


EventCallback = Callable[[Mapping[str, Any]], None]
ConnectedCallback = Callable[[], Coroutine[Any, Any, None]]


class AriClient:
    """REST + events for one ARI application.

    Use as ``async with AriClient(...) as ari:``, or call :meth:`close` yourself.
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        app: str,
        *,
        request_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        heartbeat: float = 10.0,
        backoff: Backoff = Backoff(),
        max_connections: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        self.base = ari_base_url(url)
        self.app = app
        token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {token}"}  # kept out of every URL and log
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._rng = rng or random.Random()
        #: The keep-alive connections of the REST calls (none is opened before the first).
        self.http = HttpPool(
            self.base.host or "127.0.0.1", self.base.port or 80,
            tls=self.base.scheme == "https", headers=self._headers,
            limit=max_connections, timeout=request_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        #: Set while the events websocket is open.
        self.connected = asyncio.Event()
        #: How many times the events websocket was opened (tests and metrics).
        self.connections = 0
        #: A request was refused (401/403) since the websocket opened: it is closed, and the
        #: next connection waits its backoff (see _refused).
        self._refusal = False
        self._refusal_said = False
        self._closing: asyncio.Future[Any] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session of the events websocket."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        await self.http.close()

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _refused(self, error: AriRefused) -> None:
        """Asterisk refuses our requests while the websocket stays up (it checks credentials
        only at the handshake): every call then stalled in Stasis, its phone in silence, and
        the carriers of bridged calls were never hung up. The websocket is closed, so that
        ``Stasis()`` fails (the dialplan answers 503) and the next connection's reconcile
        tidies up once Asterisk takes the credentials again; until then, backoff."""
        if not self._refusal_said:
            self._refusal_said = True
            check = ("ARI_USERNAME/ARI_PASSWORD against ari.conf" if error.status == 401 else
                     "the rights of the ARI user in ari.conf (read_only = no)")
            log.error("ARI refused a request (%s): check %s; disconnecting so that calls get "
                      "503, connecting again with backoff", error, check)
        self._refusal = True
        if self._ws is not None and not self._ws.closed and self._closing is None:
            self._closing = asyncio.ensure_future(self._ws.close())

    def retire(self) -> None:
        """Another connection took the application over: no REST request goes out from now on
        (one already on the wire is not undone)."""
        self.http.retire()

    # -- REST ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Any:
        target = quote(self.base.path + path)
        if params:
            target += "?" + urlencode(params, quote_via=quote)
        try:
            resp = await self.http.request(
                method, target, json.dumps(body).encode() if body is not None else None
            )
        except (HttpError, TimeoutError) as exc:
            raise AriUnavailable(f"{method} {path}: {type(exc).__name__}: "
                                 f"{exc or 'no answer in time'}") from exc
        if resp.status < 400:
            self._refusal_said = False
        else:
            text = resp.body.decode("utf-8", "replace")
            message = text
            try:
                data = json.loads(text)
                if isinstance(data, dict):
                    message = str(data.get("message") or data.get("error") or text)
            except ValueError:
                # Not ARI's JSON (Asterisk's HTTP server shutting down answers an HTML page):
                # one log line, not the page.
                message = _one_line(text)
            cls = {401: AriRefused, 403: AriRefused, 404: AriNotFound,
                   409: AriConflict}.get(resp.status, AriError)
            error = cls(method, path, resp.status, message)
            if isinstance(error, AriRefused):
                self._refused(error)
            raise error
        try:
            return json.loads(resp.body) if resp.body else None
        except ValueError as exc:
            # A success that is not ARI's (a proxy's page): an ARI error the calls handle, not
            # a ValueError that ends the call's task.
            text = resp.body.decode("utf-8", "replace")
            raise AriError(
                method, path, resp.status, "not ARI's JSON: " + _one_line(text)
            ) from exc

    async def create_channel(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app_args: Sequence[str] = (),
        originator: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> ev.Channel | None:
        """The channel Asterisk made (None: its answer described none)."""
        params = {"endpoint": endpoint, "app": self.app, "channelId": channel_id}
        if app_args:
            params["appArgs"] = ",".join(app_args)
        if originator:
            params["originator"] = originator
        body = {"variables": dict(variables)} if variables else None
        try:
            return ev.channel(await self._request("POST", "/channels/create", params, body))
        except AriConflict as conflict:
            return await self._made_already(conflict, self.get_channel(channel_id))

    async def dial(
        self, channel_id: str, *, caller: str | None = None, dial_timeout: int | None = None
    ) -> None:
        """Dial a channel made by :meth:`create_channel`; ``dial_timeout`` in seconds."""
        params: dict[str, str] = {}
        if caller:
            params["caller"] = caller
        if dial_timeout is not None:
            params["timeout"] = str(dial_timeout)
        await self._request("POST", f"/channels/{channel_id}/dial", params)

    async def answer(self, channel_id: str) -> None:
        await self._request("POST", f"/channels/{channel_id}/answer")

    async def hangup(self, channel_id: str, reason_code: int | None = None) -> None:
        params = {"reason_code": str(reason_code)} if reason_code is not None else None
        await self._request("DELETE", f"/channels/{channel_id}", params)

    async def set_variable(self, channel_id: str, name: str, value: str) -> None:
        # In the body: Asterisk's HTTP server refuses a request line past 4,096 bytes (400),
        # which the ROUTER_* of a call of some fifty attempts passed; a body may hold far more.
        await self._request("POST", f"/channels/{channel_id}/variable",
                            body={"variable": name, "value": value})

    async def get_variable(self, channel_id: str, name: str) -> str:
        """A channel variable's value; AriNotFound when the channel or the variable is not
        there."""
        result = await self._request("GET", f"/channels/{channel_id}/variable", {"variable": name})
        value = result.get("value") if isinstance(result, dict) else None
        if not isinstance(value, str):
            raise AriNotFound("GET", f"/channels/{channel_id}/variable", 404, "no value")
        return value

    async def set_variables(self, channel_id: str, values: Mapping[str, str]) -> None:
        """Several variables in one request, through Asterisk's ``ARRAY()`` function; in
        several when one would pass Asterisk's limit on a request body (BODY_MAX)."""
        for group in _within_body_max(values):
            await self.set_variable(channel_id, *assignment(group))

    async def list_channels(self) -> dict[str, ev.Channel]:
        """Every channel of this Asterisk, by id."""
        return ev.channels(await self._request("GET", "/channels"))

    async def create_bridge(
        self, bridge_id: str, *, name: str = "", bridge_type: str = "mixing"
    ) -> dict[str, Any]:
        params = {"type": bridge_type, "bridgeId": bridge_id}
        if name:
            params["name"] = name
        try:
            result: dict[str, Any] = await self._request("POST", "/bridges", params)
        except AriConflict as conflict:
            return await self._made_already(conflict, self.get_bridge(bridge_id))
        return result

    async def _made_already(self, conflict: AriConflict, fetch: Awaitable[_T]) -> _T:
        """A create under an id of ours answered 409 "already exists" (ids are new for each
        call and attempt): it was carried out and its reply lost, and the HTTP pool sent it
        again, taking a kept-alive connection closed with no answer for one Asterisk had
        closed while idle. Taken for a failure, the call ended in ERROR (a bridge) or blamed
        its trunk (a channel), which then stayed in Stasis past the call's end. What
        ``fetch`` finds of it; the 409 when it finds nothing."""
        try:
            found = await fetch
        except AriNotFound:
            raise conflict from None
        log.info("%s %s: made, its reply lost (409 to the request sent again): %s",
                 conflict.method, conflict.path, conflict.message)
        return found

    async def get_bridge(self, bridge_id: str) -> dict[str, Any]:
        """One bridge; AriNotFound when there is none of that id."""
        result: dict[str, Any] = await self._request("GET", f"/bridges/{bridge_id}")
        return result

    async def add_channel(self, bridge_id: str, channel_ids: Sequence[str]) -> None:
        await self._request(
            "POST", f"/bridges/{bridge_id}/addChannel", {"channel": ",".join(channel_ids)}
        )

    async def remove_channel(self, bridge_id: str, channel_id: str) -> None:
        await self._request(
            "POST", f"/bridges/{bridge_id}/removeChannel", {"channel": channel_id}
        )

    async def endpoint_names(self, technology: str) -> set[str]:
        """``GET /endpoints/{tech}``: the names of the endpoints Asterisk has of that
        technology."""
        return ev.endpoint_names(await self._request("GET", f"/endpoints/{technology}"))

    async def get_channel(self, channel_id: str) -> ev.Channel:
        """One channel; AriNotFound when it is gone."""
        found = ev.channel(await self._request("GET", f"/channels/{channel_id}"))
        return found if found is not None else ev.Channel(channel_id)

    async def destroy_bridge(self, bridge_id: str) -> None:
        await self._request("DELETE", f"/bridges/{bridge_id}")

    async def list_bridges(self) -> list[ev.Bridge]:
        return ev.bridges(await self._request("GET", "/bridges"))

    async def set_event_filter(self, allowed: Sequence[str]) -> dict[str, Any]:
        """Only these event types reach the app's websocket: Asterisk drops the rest once it
        has built their JSON, before writing it out (ChannelVarset, ChannelDialplan, bridge
        events... are most of the traffic of a call; building their JSON it still pays:
        docs/performance.md, "Why the ARI path misses its target")."""
        body = {"allowed": [{"type": t} for t in allowed]}
        result: dict[str, Any] = await self._request(
            "PUT", f"/applications/{self.app}/eventFilter", body=body
        )
        return result

    # -- events --------------------------------------------------------------------------

    async def run_events(
        self, on_event: EventCallback, on_connected: ConnectedCallback | None = None
    ) -> None:
        """Keep the events websocket open until cancelled.

        Connecting registers the application with Asterisk, so after an Asterisk restart the
        app is back as soon as the websocket is. Failures are logged once per outage.
        """
        url = self.base.with_path(self.base.path + "/events").with_query(
            {"app": self.app, "subscribeAll": "false"}
        )
        where = public_url(url)
        next_delay = self._backoff.delays(self._rng)
        outage_logged = False
        while not self.http.retired:  # (taken over: never connect again, see retire())
            # A connection that was up a while and dropped is made again at once: until it
            # is, Stasis() cannot hand calls over. Backoff after that, and after a connection
            # that closed at once (Asterisk shutting down, or refusing the app).
            again_at_once = False
            try:
                # Bounded: an Asterisk whose ARI is stuck (docs/ari.md) accepts the connection
                # and never answers the handshake; unbounded, the service waited silently.
                async with asyncio.timeout(self._connect_timeout):
                    ws = await self.session.ws_connect(
                        url, heartbeat=self._heartbeat,
                        timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    )
                async with ws:
                    self._ws = ws
                    self._refusal = False  # (one seen while no websocket was open is moot)
                    self.connections += 1
                    connected_at = time.monotonic()
                    log.info("ARI events connected to %s (app %s)", where, self.app)
                    outage_logged = False
                    self.connected.set()
                    connected_task = (
                        asyncio.create_task(on_connected()) if on_connected else None
                    )
                    if connected_task is not None:
                        connected_task.add_done_callback(_log_if_failed)
                    try:
                        await self._read(ws, on_event)
                    finally:
                        self.connected.clear()
                        self._ws = None
                        self._closing = None
                        if connected_task is not None and not connected_task.done():
                            connected_task.cancel()
                    refused, self._refusal = self._refusal, False
                    again_at_once = (time.monotonic() - connected_at >= RECONNECT_AT_ONCE_AFTER
                                     and not refused)
                    if again_at_once:  # it was up a while: a new outage starts from the top
                        next_delay = self._backoff.delays(self._rng)
                    if refused:  # (said once, as the first refusal came)
                        log.info("ARI events websocket closed: ARI refuses our requests")
                    else:
                        log.warning("ARI events websocket closed (code %s); reconnecting",
                                    ws.close_code)
            except aiohttp.WSServerHandshakeError as exc:
                if not outage_logged:
                    if exc.status >= 500:  # Asterisk starting or restarting: it passes
                        log.warning("ARI events at %s not ready (HTTP %s); retrying with "
                                    "backoff", where, exc.status)
                    else:  # a setting to fix: the credentials, the app name, the URL
                        hint = " (check ARI_USERNAME/ARI_PASSWORD)" if exc.status == 401 else ""
                        log.error("ARI events at %s refused: %s%s", where, exc.status, hint)
                    outage_logged = True
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if not outage_logged:
                    log.warning(
                        "ARI not reachable at %s (%s); retrying with backoff",
                        where,
                        f"no answer within {self._connect_timeout:g} s"
                        if type(exc) is TimeoutError else type(exc).__name__,
                    )
                    outage_logged = True
            if not again_at_once:
                await asyncio.sleep(next_delay())

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, on_event: EventCallback) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("ARI sent a message that is not JSON; ignored")
                    continue
                if isinstance(data, dict):
                    try:
                        on_event(data)
                    except Exception:  # a bug in one handler must not kill the reader
                        log.exception("handling ARI event %s failed", data.get("type"))
            elif msg.type is aiohttp.WSMsgType.ERROR:
                log.warning("ARI events websocket error: %s", ws.exception())
                break
