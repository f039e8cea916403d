"""CPU per HTTP call: httpx (PTB's default) against aiohttp (what supportbot uses for PTB).

Why it exists: it is the measurement behind ``handlers/telegram/http.py``. One local
aiohttp server, the same small form POST made sequentially by each client; prints calls
per second and CPU milliseconds per call (client and server together, one process).

    .venv/bin/python bench/http_client_bench.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from aiohttp import web

FORM = {"chat_id": "1", "text": "Nous livrons en 2 à 4 jours ouvrés."}


async def timed(call: Callable[[], Awaitable[None]], calls: int) -> tuple[float, float]:
    for _ in range(50):  # warm up: connections, caches
        await call()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await call()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return calls / wall, 1000 * cpu / calls


async def main(calls: int) -> dict[str, float]:
    async def answer(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True, "result": True})

    app = web.Application()
    app.router.add_post("/bot/sendMessage", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/bot/sendMessage"
    results: dict[str, float] = {}
    try:
        async with aiohttp.ClientSession() as session:

            async def with_aiohttp() -> None:
                async with session.post(url, data=FORM) as response:
                    await response.read()

            rate, cpu = await timed(with_aiohttp, calls)
            results |= {"aiohttp_calls_per_s": round(rate), "aiohttp_cpu_ms": round(cpu, 2)}
        async with httpx.AsyncClient(trust_env=False) as client:

            async def with_httpx() -> None:
                (await client.post(url, data=FORM)).read()

            rate, cpu = await timed(with_httpx, calls)
            results |= {"httpx_calls_per_s": round(rate), "httpx_cpu_ms": round(cpu, 2)}
    finally:
        await runner.cleanup()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    result = asyncio.run(main(args.calls))
    for client in ("aiohttp", "httpx"):
        print(
            f"{client:8} {result[f'{client}_calls_per_s']:6} calls/s"
            f"   {result[f'{client}_cpu_ms']:.2f} ms CPU a call"
        )
    print(f"rerun: .venv/bin/python bench/http_client_bench.py --calls {args.calls}")
    print(json.dumps(result, sort_keys=True))
