#!/usr/bin/env python3
"""Hostile clients against a running ironic_cpi_server, on loopback; prints figures, never fails on a time.

Phase 1 ("under attack") opens and holds, all at once:
  - IDLE connections that send nothing;
  - TRICKLE connections that send slowly: half trickle a request head one byte at a time, half
    send an authenticated PUT head and then trickle its body one byte at a time;
  - STALLED anonymous downloads of an image that never read a byte of the answer (small
    receive buffer).
While they are held, a probe opens a new connection every PROBE_INTERVAL seconds and GETs
/healthz; the server's RSS and open descriptors are sampled from /proc.

Phase 2 ("they stop"): the hostile clients stop sending and reading but keep their connections
open. The server must end them all by itself within its timeouts: its descriptor count is
watched until it is back where it started, while /healthz, an anonymous download of the whole
image, an authenticated PUT and a registry read are checked.

Phase 3 ("gone"): the clients close what is left; 12 s later (the server's housekeeping tick)
its RSS shows what it kept.

Usage: server_load.py URL PID USER:PASSWORD IMAGE_PATH IMAGE_BYTES  (the wrapper script sets it up)
Environment: IDLE (1000), TRICKLE (500), STALLED (1500), HOLD (seconds, 20), PROBE_INTERVAL (0.2).
"""

import asyncio
import base64
import os
import socket
import statistics
import sys
import time

URL, PID, CREDS, IMAGE_PATH, IMAGE_BYTES = sys.argv[1:6]
IMAGE_BYTES = int(IMAGE_BYTES)
HOST, PORT = URL.removeprefix("http://").split(":")
PORT = int(PORT)
AUTH = "Basic " + base64.b64encode(CREDS.encode()).decode()
IDLE = int(os.environ.get("IDLE", 1000))
TRICKLE = int(os.environ.get("TRICKLE", 500))
STALLED = int(os.environ.get("STALLED", 1500))
HOLD = float(os.environ.get("HOLD", 20))
PROBE_INTERVAL = float(os.environ.get("PROBE_INTERVAL", 0.2))


def proc_status():
    rss = hwm = 0
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{PID}/fd"))
    return rss, hwm, fds


class Group:
    """Hostile connections of one kind, and how many of them the server closed."""

    def __init__(self, name):
        self.name = name
        self.socks = []
        self.connect_failed = 0
        self.closed_by_server = 0
        self.tasks = []

    def report(self):
        held = len(self.socks) - self.closed_by_server
        return (f"{self.name}: opened {len(self.socks)}, connect failures {self.connect_failed}, "
                f"closed by the server during the hold {self.closed_by_server}, still open {held}")


async def connect(group, rcvbuf=None):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    try:
        await asyncio.wait_for(loop.sock_connect(s, (HOST, PORT)), 10)
    except (OSError, asyncio.TimeoutError):
        group.connect_failed += 1
        s.close()
        return None
    group.socks.append(s)
    return s


async def watch_close(group, s):
    """Counts the connection as closed by the server once a read sees EOF or a reset."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            data = await loop.sock_recv(s, 65536)
            if not data:
                break
    except (OSError, asyncio.CancelledError):
        if asyncio.current_task().cancelled():
            return
    group.closed_by_server += 1


async def send(s, data):
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.sock_sendall(s, data), 5)


async def trickle(group, s, head, step, quiet):
    """Send `head` at once, then one byte of `step` per second until the socket fails or `quiet`
    is set (then just wait for the server to close)."""
    try:
        if head:
            await send(s, head)
        i = 0
        while not quiet.is_set():
            await asyncio.sleep(1)
            await send(s, step[i % len(step):i % len(step) + 1])
            i += 1
    except (OSError, asyncio.TimeoutError):
        group.closed_by_server += 1
        return
    except asyncio.CancelledError:
        return
    await watch_close(group, s)


async def http(method, path, body=b"", auth=False, timeout=10):
    """One request on a new connection; (status, body bytes, seconds)."""
    start = time.monotonic()
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{PORT}\r\nConnection: close\r\n"
    if auth:
        head += f"Authorization: {AUTH}\r\n"
    if method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    head += "\r\n"
    r, w = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), timeout)
    try:
        w.write(head.encode() + body)
        await w.drain()
        data = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    payload = data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in data else b""
    return status, payload, time.monotonic() - start


async def probe_health(results, stop):
    while not stop.is_set():
        try:
            status, _, took = await http("GET", "/healthz", timeout=5)
            results.append((status == 200, took))
        except (OSError, asyncio.TimeoutError, IndexError, ValueError):
            results.append((False, 5.0))
        await asyncio.sleep(PROBE_INTERVAL)


async def sample(samples, stop):
    while not stop.is_set():
        try:
            samples.append(proc_status())
        except OSError:
            pass
        await asyncio.sleep(0.25)


def summary(results):
    ok = [t for good, t in results if good]
    lat = sorted(ok)
    pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
    return (f"{len(ok)}/{len(results)} succeeded; latency ms p50 {pct(0.5):.1f}, p95 {pct(0.95):.1f}, "
            f"max {(max(lat) * 1000 if lat else float('nan')):.1f}")


async def main():
    rss0, _, fds0 = proc_status()
    print(f"before: RSS {rss0 / 1024:.1f} MiB, {fds0} descriptors")
    idle, trickling, stalled = Group("idle"), Group("trickling"), Group("stalled downloads")
    stop, quiet = asyncio.Event(), asyncio.Event()
    health, samples = [], []
    prober = asyncio.create_task(probe_health(health, stop))
    sampler = asyncio.create_task(sample(samples, stop))

    t0 = time.monotonic()
    for _ in range(IDLE):
        s = await connect(idle)
        if s:
            idle.tasks.append(asyncio.create_task(watch_close(idle, s)))
    for i in range(TRICKLE):
        s = await connect(trickling)
        if not s:
            continue
        if i % 2 == 0:
            head = b""
            step = f"GET /images/x HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode() + b"a" * 4096
        else:
            head = (f"PUT /images/trickle/{i} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: {AUTH}\r\n"
                    f"Content-Length: 1000000\r\n\r\n").encode()
            step = b"x"
        trickling.tasks.append(asyncio.create_task(trickle(trickling, s, head, step, quiet)))
    get_image = f"GET /images/{IMAGE_PATH} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    for _ in range(STALLED):
        s = await connect(stalled, rcvbuf=4096)
        if not s:
            continue
        try:
            await send(s, get_image)
        except (OSError, asyncio.TimeoutError):
            stalled.closed_by_server += 1
    opened = time.monotonic() - t0
    print(f"opened {IDLE} idle, {TRICKLE} trickling, {STALLED} stalled in {opened:.1f} s; holding {HOLD:.0f} s")
    health_before = len(health)
    await asyncio.sleep(HOLD)

    under = health[health_before:]
    # What the stalled downloads got: the start of a 200, a 503 (no anonymous place), or nothing.
    answers = {}
    for sock in stalled.socks:
        try:
            head = sock.recv(12, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            kind = head.decode(errors="replace") if head else "closed"
        except BlockingIOError:
            kind = "no answer yet"
        except OSError as e:
            kind = f"error {e.errno}"
        answers[kind] = answers.get(kind, 0) + 1
    peak_rss = max(s[0] for s in samples)
    peak_fds = max(s[2] for s in samples)
    _, hwm, _ = proc_status()
    print()
    print("== under attack")
    print(f"   /healthz (new connection every {PROBE_INTERVAL} s): {summary(under)}")
    print(f"   server RSS peak {peak_rss / 1024:.1f} MiB (VmHWM {hwm / 1024:.1f} MiB, goal < 64 MB); "
          f"descriptors peak {peak_fds}")
    for g in (idle, trickling, stalled):
        print(f"   {g.report()}")
    shown = ", ".join(f"{n} {k!r}" for k, n in sorted(answers.items()))
    print(f"   stalled downloads' answers: {shown}")

    # Phase 2: they stop sending and reading, and keep their connections.
    quiet.set()
    stopped = time.monotonic()
    print(f"\n(the clients stop {stopped - t0:.1f} s after the first connection)")
    body = os.urandom(64 * 1024)
    probes = {
        "healthz": (lambda: http("GET", "/healthz", timeout=5), lambda r: r[0] == 200),
        "anonymous image download": (
            lambda: http("GET", f"/images/{IMAGE_PATH}", timeout=10),
            lambda r: r[0] == 200 and len(r[1]) == IMAGE_BYTES),
        "authenticated PUT": (lambda: http("PUT", "/images/after/put.bin", body, auth=True, timeout=5),
                              lambda r: r[0] in (200, 201, 204)),
        "registry read": (
            lambda: http("GET", "/registry/instances/load-vm/settings", auth=True, timeout=5),
            lambda r: r[0] == 200),
    }
    checks = {}

    async def until_served(name, make, good):
        # Each kind of request on its own, retried until it succeeds.
        while time.monotonic() - stopped < 180:
            try:
                if good(await make()):
                    checks[name] = time.monotonic() - stopped
                    return
            except (OSError, asyncio.TimeoutError, IndexError, ValueError):
                pass
            await asyncio.sleep(0.25)

    timeline = []

    async def until_all_closed():
        next_mark = 0
        while time.monotonic() - stopped < 180:
            t, fds = time.monotonic() - stopped, proc_status()[2]
            if t >= next_mark:
                timeline.append(f"{t:.0f}s {fds}")
                next_mark += 5
            if fds <= fds0 + 2:
                return t
            await asyncio.sleep(0.25)
        return None

    watcher = asyncio.create_task(until_all_closed())
    await asyncio.gather(*(until_served(n, m, g) for n, (m, g) in probes.items()))
    all_closed = await watcher
    print()
    print("== after the clients stopped (connections left open)")
    for name in probes:
        took = checks.get(name)
        shown = f"served after {took:.2f} s" if took is not None else "NOT served within 180 s"
        print(f"   {name}: {shown}")
    shown = f"{all_closed:.1f} s" if all_closed is not None else "NOT within 180 s"
    print(f"   the server had closed every hostile connection after {shown} "
          f"(descriptors back to {fds0})")
    print(f"   its descriptors meanwhile: {', '.join(timeline)}")
    for g in (idle, trickling):
        print(f"   {g.name}: the client saw {g.closed_by_server} of {len(g.socks)} closed by the server")

    # Phase 3: they go away.
    for g in (idle, trickling, stalled):
        for t in g.tasks:
            t.cancel()
        for sock in g.socks:
            sock.close()
    stop.set()
    await asyncio.gather(prober, sampler, return_exceptions=True)
    # The server gives freed memory back on its 10-second housekeeping tick.
    await asyncio.sleep(12)
    rss1, hwm1, fds1 = proc_status()
    print()
    print("== after the clients went away")
    print(f"   12 s later: server RSS {rss1 / 1024:.1f} MiB (VmHWM {hwm1 / 1024:.1f} MiB), "
          f"{fds1} descriptors")


asyncio.run(main())
