"""A loopback TCP proxy that delays every byte by a fixed one-way latency (benchmarks only).

Each direction timestamps chunks as they arrive and forwards them once the delay has passed, so
it adds latency without throttling throughput: a pipelined request costs one delay, a loop of
N requests costs N. It listens on 127.0.0.1 only and forwards to one upstream on loopback.
Threads and ``time.sleep`` keep the added delay close to the asked one (asyncio rounds timer
waits up to a millisecond); the benchmark prints the effective round trip it measured.

:func:`spawned` runs the proxy in a process of its own, so that its threads do not take the
measured client's GIL (on a real network the hop costs the client nothing but the wait), and
:func:`network` wraps it for a Redis URL: its delay is corrected once so that the proxy adds
about the asked round trip to a PING (thread wake-ups add their own share on a loaded machine).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit


class LatencyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.server.accept()
            upstream = socket.create_connection(self.upstream)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipe(client, upstream)
            self._pipe(upstream, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                chunks.put((time.perf_counter() + self.delay, data))
                if not data:
                    return

        def write() -> None:
            while True:
                due, data = chunks.get()
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()


@contextlib.contextmanager
def spawned(upstream_host: str, upstream_port: int, delay: float) -> Iterator[int]:
    """A :class:`LatencyProxy` in a child process for the ``with`` block; yields its port."""
    proc = subprocess.Popen([sys.executable, __file__, upstream_host, str(upstream_port),
                             repr(delay)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the child serves until its stdin closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ping_rtt(url: str, n: int = 200) -> float:
    """Median seconds of ``n`` PINGs on one connection (after one not counted)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            client.ping()
            times.append(time.perf_counter() - started)
        return statistics.median(times)
    finally:
        client.close()


@contextlib.contextmanager
def network(url: str, rtt: float, attempts: int = 4) -> Iterator[tuple[str, str]]:
    """Yields (Redis URL, description): ``url`` itself when ``rtt`` is 0, else the URL of a
    spawned proxy adding about ``rtt`` seconds per round trip: the added PING time is measured
    against the direct one and the delay corrected, up to ``attempts`` proxies, until it is
    within 15% (else the closest one is used); the measured figure is in the description."""
    direct = ping_rtt(url)
    if not rtt:
        yield url, f"loopback (PING {direct * 1000:.3f} ms)"
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    delay, tried = rtt / 2, []
    for _ in range(attempts):
        with spawned(host, port, delay) as proxy_port:
            added = ping_rtt(url.replace(parts.netloc, f"127.0.0.1:{proxy_port}", 1)) - direct
        tried.append((abs(added - rtt), delay))
        if abs(added - rtt) <= 0.15 * rtt:
            break
        delay = max(0.0, delay - (added - rtt) / 2)
    delay = min(tried)[1]
    with spawned(host, port, delay) as proxy_port:
        via = url.replace(parts.netloc, f"127.0.0.1:{proxy_port}", 1)
        added = ping_rtt(via) - direct
        yield via, (f"proxy +{added * 1000:.2f} ms per round trip (asked {rtt * 1000:.2f}, "
                    f"PING {direct * 1000:.3f} ms direct)")


def main(argv: list[str]) -> None:
    """``python latency_proxy.py HOST PORT DELAY``: prints its port, serves until stdin closes."""
    proxy = LatencyProxy(argv[0], int(argv[1]), float(argv[2]))
    print(proxy.port, flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
