"""A small app for supervision tests, standard library only (starts in tens of milliseconds).

    python tests/apps/sockapp.py SOCKET [--delay S] [--exit N] [--never-listen] [--grandchild]
                                        [--say TEXT]

Prints `start <pid> <time.time()>`, waits `--delay` seconds, then answers every HTTP request on
the Unix socket SOCKET with `<pid>` (and prints `request <path>`; `/slow` answers after 1 s).
`--exit N` exits with status N right after the start line, and a line `exit <pid> <started>
<exiting>` (seconds since boot: when the process was made, from /proc, to 10 ms, and now);
`--never-listen` prints `booting` and never listens; `--grandchild` first starts a `sleep`
child of its own (in the app's process group). `--say TEXT` prints `say TEXT` after the start
line, and the variable SOCKAPP_SAY, when set, `env <its value>`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode()
            print("request", path, flush=True)
            if path == "/slow":
                await asyncio.sleep(1.0)
            body = str(os.getpid()).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(path: str) -> None:
    server = await asyncio.start_unix_server(handle, path)
    print("listening", path, flush=True)
    async with server:
        await server.serve_forever()


def made_at() -> float:
    """When this process was made (forked), in seconds since boot: field 22 of /proc/self/stat,
    in clock ticks."""
    with open("/proc/self/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--exit", type=int)
    parser.add_argument("--never-listen", action="store_true")
    parser.add_argument("--grandchild", action="store_true")
    parser.add_argument("--say")
    args = parser.parse_args()
    print("start", os.getpid(), time.time(), flush=True)
    if args.say is not None:
        print("say", args.say, flush=True)
    if "SOCKAPP_SAY" in os.environ:
        print("env", os.environ["SOCKAPP_SAY"], flush=True)
    if args.exit is not None:
        print("exit", os.getpid(), made_at(), time.clock_gettime(time.CLOCK_BOOTTIME), flush=True)
        sys.exit(args.exit)
    if args.grandchild:
        subprocess.Popen(["sleep", "1000"])
    if args.never_listen:
        print("booting", flush=True)
        time.sleep(1000)
    time.sleep(args.delay)
    asyncio.run(serve(args.socket))


if __name__ == "__main__":
    main()
