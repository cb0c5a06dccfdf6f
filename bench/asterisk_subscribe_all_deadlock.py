"""Reproduce an Asterisk ARI deadlock that stopped a CI run: an ARI app subscribed to everything
(``subscribeAll=true``, device states included) closes its websocket while calls change device
states (asterisk/asterisk#2170, open; seen on Asterisk 22.10.1).

Afterwards that app cannot connect again, nor can an app that was registered before (the router's
own, after a restart), and ``GET /ari/applications`` never answers; calls of an app that stayed
connected still route. Only restarting Asterisk ends it (``outbound-router lab down`` and
``lab up``). The router's app does not subscribe to everything, and the lab tests' observer now
subscribes to the phones' endpoint only; with ``--subscribe endpoint`` this script checks that
such an app survives the same treatment.

Usage, with the lab up (``outbound-router lab up``; it restarts nothing)::

    .venv/bin/python bench/asterisk_subscribe_all_deadlock.py --subscribe all --rounds 400
    .venv/bin/python bench/asterisk_subscribe_all_deadlock.py --subscribe endpoint --rounds 600

Each round connects the app, keeps it 50 to 400 ms while the baseline phone places calls to
carrier-a (static ``Dial()``, 25 calls/s), and closes it. Prints every 50 rounds, then either
the round at which a connect did not complete within 5 s, or that none hung. Exit 1 on a hang.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outbound_router import lab, sipp, topology  # noqa: E402

APP = "router-deadlock-probe"
ENDPOINT = "PJSIP/phone-baseline"


def place_calls(stop: threading.Event, workdir: Path) -> None:
    while not stop.is_set():
        sipp.start_load(topology.phone("baseline").address, "911234567", workdir,
                        calls=100, rate=25, concurrent=40, talk=0.2).wait()


async def probe(subscribe: str, rounds: int) -> int:
    info = lab.running_info()
    if info is None:
        print("the lab is not running: outbound-router lab up", file=sys.stderr)
        return 2
    headers = {"Authorization": aiohttp.encode_basic_auth(*info.ari_auth)}
    url = f"{info.ari_url}/ari/events?app={APP}"
    if subscribe == "all":
        url += "&subscribeAll=true"
    async with aiohttp.ClientSession(headers=headers) as http:
        for n in range(1, rounds + 1):
            try:
                async with asyncio.timeout(5):
                    ws = await http.ws_connect(url)
                    if subscribe == "endpoint":
                        async with http.post(f"{info.ari_url}/ari/applications/{APP}/subscription",
                                             params={"eventSource": f"endpoint:{ENDPOINT}"}) as r:
                            r.raise_for_status()
            except TimeoutError:
                print(f"round {n}: the app's websocket did not connect within 5 s: ARI is "
                      "deadlocked; restart Asterisk (outbound-router lab down && lab up)")
                return 1
            varsets = 0
            until = time.monotonic() + random.uniform(0.05, 0.4)
            while (left := until - time.monotonic()) > 0:
                try:
                    msg = await asyncio.wait_for(ws.receive(), left)
                except TimeoutError:
                    break
                varsets += msg.type == aiohttp.WSMsgType.TEXT and '"ChannelVarset"' in msg.data
            await ws.close()
            if n % 50 == 0:
                print(f"round {n}: connected, {varsets} ChannelVarset events in this round",
                      flush=True)
    print(f"subscribe={subscribe}: {rounds} rounds, no hang")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribe", choices=("all", "endpoint"), default="all")
    parser.add_argument("--rounds", type=int, default=400)
    args = parser.parse_args()
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="deadlock-probe-") as tmp:
        caller = threading.Thread(target=place_calls, args=(stop, Path(tmp)), daemon=True)
        caller.start()
        try:
            return asyncio.run(probe(args.subscribe, args.rounds))
        finally:
            stop.set()
            caller.join()


if __name__ == "__main__":
    sys.exit(main())
