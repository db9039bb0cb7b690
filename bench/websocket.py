#!/usr/bin/env python3
"""The WebSocket scenario of `make bench-report`: an echo upstream and a
client, both Python (the `websockets` package, pinned in the report's
venv) on the load core, each proxy in between on the proxy core, routed
as in bench/churn.py. The client keeps CONNECTIONS WebSockets open, each
sending a 64-byte text message and waiting for its echo, and reports
messages/s, round-trip percentiles and the proxy's CPU per message.

The Python load side is slower than any proxy here, so messages/s is
about the same for all; the proxy's CPU per message and the round trip are
what tell them apart.

usage: websocket.py OUT_JSON          (runs every proxy)
       websocket.py --echo PORT       (the upstream, internal)
       websocket.py --client URL SECONDS CONNECTIONS   (internal; JSON on stdout)
env:   as bench/churn.py; BENCH_WS_SECONDS (10), BENCH_WS_CONNECTIONS (16)
"""

import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MESSAGE = "x" * 64


async def echo_server(port):
    from websockets.asyncio.server import serve

    async def echo(ws):
        async for msg in ws:
            await ws.send(msg)

    async with serve(echo, "127.0.0.1", port, compression=None):
        print("ready", flush=True)
        await asyncio.Future()


async def client(url, seconds, connections):
    from websockets.asyncio.client import connect

    rtts, errors = [], 0
    end = time.monotonic() + seconds

    async def one():
        nonlocal errors
        while time.monotonic() < end:
            try:
                async with connect(url, compression=None, open_timeout=5) as ws:
                    while time.monotonic() < end:
                        t = time.perf_counter()
                        await ws.send(MESSAGE)
                        got = await asyncio.wait_for(ws.recv(), 5)
                        if got != MESSAGE:
                            errors += 1
                            continue
                        rtts.append(time.perf_counter() - t)
            except Exception:  # noqa: BLE001 - any failure of the connection counts as one error
                errors += 1
                await asyncio.sleep(0.01)

    t0 = time.monotonic()
    await asyncio.gather(*[one() for _ in range(connections)])
    wall = time.monotonic() - t0
    rtts.sort()

    def pct(p):
        return round(rtts[min(len(rtts) - 1, int(len(rtts) * p / 100))] * 1000, 3) if rtts else None

    points = (10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99)
    print(
        json.dumps(
            {
                "messages": len(rtts),
                "errors": errors,
                "wall_s": wall,
                "percentiles_ms": {f"{p:g}": pct(p) for p in points},
            }
        )
    )


def proxy_ticks(pid):
    """User+system jiffies of a process and its children (nginx's worker)."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def run_all(out):
    import churn

    names = os.environ.get("BENCH_PROXIES", "portico nginx haproxy caddy traefik").split()
    seconds = int(os.environ.get("BENCH_WS_SECONDS", "10"))
    conns = int(os.environ.get("BENCH_WS_CONNECTIONS", "16"))
    names, notes = churn.available(names)
    procs = churn.Processes()
    work = churn.workdir()
    results = []
    hz = os.sysconf("SC_CLK_TCK")
    try:
        for name in names:
            port = churn.free_port()
            echo = procs.start([sys.executable, __file__, "--echo", str(port)], churn.LOAD_CORE, stdout=subprocess.PIPE)
            if echo.stdout.readline().strip() != b"ready":
                raise SystemExit("websocket: the echo upstream did not start")
            proxy = churn.Proxy(name, procs, work, [f"127.0.0.1:{port}"], False, websocket=True)
            try:
                proxy.start(ready_path="/bench", ready_status=None)
                churn.log(f"websocket: {name}, {seconds} s, {conns} connections")
                before = proxy_ticks(proxy.proc.pid)
                foreign = churn.ForeignCpu()
                foreign.start()
                t0 = time.monotonic()
                run = subprocess.run(
                    ["taskset", "-c", churn.LOAD_CORE, sys.executable, __file__, "--client",
                     f"ws://127.0.0.1:{proxy.port}/bench", str(seconds), str(conns)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                wall = time.monotonic() - t0
                cpu_s = (proxy_ticks(proxy.proc.pid) - before) / hz
                r = json.loads(run.stdout)
                msgs = r["messages"]
                results.append(
                    {
                        "proxy": name,
                        "messages_per_s": round(msgs / r["wall_s"], 1) if r["wall_s"] else None,
                        "p50_ms": r["percentiles_ms"]["50"],
                        "p99_ms": r["percentiles_ms"]["99"],
                        "p999_ms": r["percentiles_ms"]["99.9"],
                        "proxy_cpu_us_per_message": round(cpu_s * 1e6 / msgs, 2) if msgs else None,
                        "proxy_cpu_share": f"{cpu_s / wall:.0%}",
                        "errors": r["errors"],
                        "foreign_cpu": foreign.share(),
                        "percentiles_ms": r["percentiles_ms"],
                    }
                )
                churn.log(f"{name}: {results[-1]['messages_per_s']} msg/s, p99 {results[-1]['p99_ms']} ms")
            except (RuntimeError, subprocess.CalledProcessError, json.JSONDecodeError) as e:
                detail = getattr(e, "stderr", "") or ""
                notes.append(f"{name} not measured: {e} {detail[-300:]}")
                churn.log(f"{name}: {e} {detail[-300:]}")
            procs.stop_all()
    finally:
        procs.stop_all()
        churn.remove(work)
    doc = {
        "caption": f"{conns} WebSockets, one 64-byte message in flight on each, {seconds} s per proxy",
        "columns": [
            ["proxy", "proxy"],
            ["messages_per_s", "messages/s"],
            ["p50_ms", "p50 ms", ".3f"],
            ["p99_ms", "p99 ms", ".3f"],
            ["p999_ms", "p99.9 ms", ".3f"],
            ["proxy_cpu_us_per_message", "proxy CPU µs/message", ".2f"],
            ["proxy_cpu_share", "proxy CPU"],
            ["errors", "errors", "d"],
            ["foreign_cpu", "foreign CPU", ".0%"],
        ],
        "curves": {r["proxy"]: r.pop("percentiles_ms") for r in results},
        "curve_title": "WebSocket echo round trip",
        "results": results,
        "notes": notes,
    }
    with open(out, "w") as f:
        json.dump(doc, f, indent=2)
    if not results:
        raise SystemExit(f"websocket: no proxy measured: {notes}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--echo":
        asyncio.run(echo_server(int(sys.argv[2])))
    elif len(sys.argv) == 5 and sys.argv[1] == "--client":
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    elif len(sys.argv) == 2:
        run_all(sys.argv[1])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
