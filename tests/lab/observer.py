"""What the lab tests read from outside a call: the ROUTER_* variables of finished calls (an
observing ARI application) and what a log got after an offset."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from outbound_router import lab as lab_mod


class AriObserver:
    """A second ARI application, in a thread of its own, subscribed to the phones' endpoint: it
    collects the ``ChannelVarset`` events of the phones' channels (``phones``: a channel name
    prefix, ``PJSIP/phone-ari-`` or ``PJSIP/phone-agi-``), so the ROUTER_* variables of a call
    can be checked after it ended, whole (the lab's CDR CSV cuts a record at 1,024 bytes).

    Not ``subscribeAll=true``: an app subscribed to everything is subscribed to device states
    too, and Asterisk 22.10 deadlocks when such an app's websocket closes while a device state
    change is dispatched to it (asterisk/asterisk#2170). The endpoint's state changed at every
    call's end, just when the observer closed: once in a CI run the app could not connect
    again, nor could the router's own app after a restart, and ``GET /applications`` hung
    (``bench/asterisk_subscribe_all_deadlock.py`` reproduces it)."""

    APP = "router-test-observer"
    CONNECT_TIMEOUT = 5.0

    def __init__(self, url: str, auth: tuple[str, str], phones: str = "PJSIP/phone-ari-") -> None:
        self.phones = phones
        self.base = url
        self.url = f"{url}/ari/events?app={self.APP}"
        self.endpoint = phones.rstrip("-")  # PJSIP/phone-ari-0000002a is on PJSIP/phone-ari
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.events: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with aiohttp.ClientSession(headers=self.headers) as session:
            async with asyncio.timeout(self.CONNECT_TIMEOUT):
                ws = await session.ws_connect(self.url)
                async with session.post(f"{self.base}/ari/applications/{self.APP}/subscription",
                                        params={"eventSource": f"endpoint:{self.endpoint}"}) as r:
                    assert r.status == 200, f"subscribing to {self.endpoint}: HTTP {r.status}"
            async with ws:
                self._ready.set()
                reader = asyncio.ensure_future(self._read(ws))
                await self._stop.wait()
                reader.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            event = msg.json()
            name = (event.get("channel") or {}).get("name", "")
            if event.get("type") == "ChannelVarset" and name.startswith(self.phones):
                self.events.append(event)

    def __enter__(self) -> AriObserver:
        self._thread.start()
        assert self._ready.wait(self.CONNECT_TIMEOUT + 1), "the observer could not connect to ARI"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self._loop.close()

    def variables(self) -> dict[str, str]:
        """The ROUTER_* variables set so far (the last value of each)."""
        return {e["variable"]: e["value"] for e in list(self.events)
                if str(e.get("variable", "")).startswith("ROUTER_")}

    def wait_variable(self, name: str, timeout: float = 5.0) -> str:
        return str(wait_for(f"{name} to be set", lambda: self.variables().get(name), timeout))

    def whole_trace(self) -> str:
        """ROUTER_ATTEMPTS once it ends with an answered attempt (it grows attempt by
        attempt)."""
        return str(wait_for("the whole trace", lambda: (
            t if (t := self.variables().get("ROUTER_ATTEMPTS", "")).endswith(":200") else None)))


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling ARI or a trace file: there is no event to await here
    return value


def logged_since(log: Path | str, offset: int) -> str:
    """What a log got after byte ``offset``. Sliced as text the offset went past the new
    lines once the log held \\r\\n (Asterisk's HTML error page, quoted in a warning): text
    mode reads it as one character."""
    return lab_mod.logged_since(Path(log), offset).decode(errors="replace")
