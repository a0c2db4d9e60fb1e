"""Many browsers catching up at once, in a process of their own (so that reading them costs the test nothing):
``python sse_flood.py URL SESSION_COOKIE COUNT`` opens COUNT event streams asking for every event since the
beginning, prints "open" once all answered 200, reads until its standard input closes, then prints how many
events each stream was sent, as JSON. It runs at a low priority: the browsers it stands for run on their own
machines, so reading 120 streams must not take the console's share of this one's cores."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import httpx


async def main(url: str, cookie: str, count: int) -> None:
    received = [0] * count
    opened = asyncio.Event()
    answered = 0
    done = asyncio.Event()

    async def one(index: int, client: httpx.AsyncClient) -> None:
        nonlocal answered
        headers = {"Last-Event-ID": "alert:0,telescope:0,preprocessor:0"}
        async with client.stream("GET", "/api/events", headers=headers) as response:
            if response.status_code != 200:
                raise SystemExit(f"stream {index}: HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            answered += 1
            if answered == count:
                opened.set()

            async def read() -> None:
                async for line in response.aiter_lines():
                    received[index] += line.startswith("data:")

            reading = asyncio.create_task(read())
            await done.wait()
            reading.cancel()

    async def until_stdin_closes() -> None:
        await opened.wait()
        print("open", flush=True)
        await asyncio.to_thread(sys.stdin.read)
        done.set()

    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    cookies = {"toros_session": cookie}
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=120, limits=limits) as client:
        await asyncio.gather(until_stdin_closes(), *(one(i, client) for i in range(count)))
    print(json.dumps(received), flush=True)


if __name__ == "__main__":
    os.nice(10)
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
