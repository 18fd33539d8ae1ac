"""Issue 25's two checks beside the throughput figures (run.py calls them on each sandbox target).

stall: the single-route wrk run alone, then again while 16 calls sleep on
  `X-Sandbox-Fault: latency=MS` at once (16 client threads, each its own token and connection,
  each sending its next sleeping call as soon as the last one answered). Goal: the others'
  throughput within 10 % of the run without them. Interleaved per round; the ratio of each
  round is shown, then their median.
exactness: one fresh token, 200 calls from 16 connections started on the same instant (the
  start of a second): the answers are grouped by their window (RateLimit-Reset), and each
  window must have answered exactly min(20, its calls) with 200. Then, at once, the journal is
  read over several new connections (gunicorn hands each to whichever worker accepts it): every
  read must hold all 200 calls with the statuses the client saw.
"""
from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from collections import Counter

from common import mint_tokens, run_wrk
from route import ROUTE

STALLED = 16
LATENCY_MS = 2000
BURST, BURST_CONNECTIONS = 200, 16
JOURNAL_READS = 8


class Sleepers:
    """STALLED threads, each keeping one call sleeping on a latency fault in flight."""

    def __init__(self, port: int, count=STALLED, latency_ms=LATENCY_MS):
        self.port, self.latency_ms = port, latency_ms
        self.stop = threading.Event()
        self.answered = Counter()
        self.tokens = mint_tokens(count)
        self.threads = [threading.Thread(target=self._loop, args=(t,), daemon=True) for t in self.tokens]

    def _loop(self, token):
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.latency_ms / 1000 + 60)
            try:
                conn.request("GET", ROUTE, headers={"X-Api-Key": token, "X-Sandbox-Fault": f"latency={self.latency_ms}"})
                response = conn.getresponse()
                response.read()
                self.answered[response.status] += 1
            except OSError as exc:
                self.answered[type(exc).__name__] += 1
                time.sleep(0.1)
            finally:
                conn.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)  # every sleeper sent, before the measured run starts
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(self.latency_ms / 1000 + 65)


def stall(server, script, args, rounds: int) -> dict:
    ratios, rows = [], []
    for _ in range(rounds):
        run_wrk(server.url, script, args.threads, args.connections, args.warmup)
        alone = run_wrk(server.url, script, args.threads, args.connections, args.duration)
        with Sleepers(server.port) as sleepers:
            loaded = run_wrk(server.url, script, args.threads, args.connections, args.duration)
        ratios.append(loaded["rps"] / alone["rps"])
        rows.append((alone, loaded, dict(sleepers.answered)))
    return {"ratios": ratios, "rows": rows}


def print_stall(name: str, outcome: dict):
    for alone, loaded, answered in outcome["rows"]:
        print(f"  {name:18s} alone {alone['rps']:6.0f} req/s (p99 {alone['p99_us'] / 1000:6.1f} ms), with {STALLED} "
              f"calls sleeping {LATENCY_MS} ms: {loaded['rps']:6.0f} req/s (p99 {loaded['p99_us'] / 1000:7.1f} ms, "
              f"wrk errors {sum(loaded['errors'].values()) - loaded['errors']['status']}) = "
              f"{loaded['rps'] / alone['rps']:.2f}x; sleeping calls answered {answered}")
    ratios = outcome["ratios"]
    verdict = "met" if statistics.median(ratios) >= 0.9 else "NOT met"
    print(f"  {name:18s} throughput with / without the sleepers: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}); goal >= 0.90x: {verdict}")


def _get(port, path, token, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"X-Api-Key": token})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def exactness(server) -> dict:
    token = mint_tokens(1)[0]
    answers = []  # (status, RateLimit-Reset)
    lock = threading.Lock()
    start = threading.Barrier(BURST_CONNECTIONS)

    def shooter(count):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        start.wait()
        mine = []
        try:
            for _ in range(count):
                conn.request("GET", ROUTE, headers={"X-Api-Key": token})
                response = conn.getresponse()
                response.read()
                mine.append((response.status, response.getheader("RateLimit-Reset")))
        finally:
            conn.close()
            with lock:
                answers.extend(mine)

    shares = [BURST // BURST_CONNECTIONS + (i < BURST % BURST_CONNECTIONS) for i in range(BURST_CONNECTIONS)]
    threads = [threading.Thread(target=shooter, args=(n,)) for n in shares]
    time.sleep(1.02 - time.time() % 1)  # start on a window's first instant
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    windows: dict[str, Counter] = {}
    for status, reset in answers:
        windows.setdefault(reset or "?", Counter())[status] += 1
    exact = all(c[200] == min(20, sum(c.values())) for c in windows.values()) and len(answers) == BURST
    client_statuses = Counter(status for status, _ in answers)
    reads = []
    for _ in range(JOURNAL_READS):  # at once: no pause between the last answer and the reads
        status, _, body = _get(server.port, "/sandbox/requests", token)
        rows = json.loads(body)["requests"] if status == 200 else []
        reads.append((status, len(rows), Counter(r["status"] for r in rows)))
    complete = all(s == 200 and n == BURST and c == client_statuses for s, n, c in reads)
    return {"elapsed": elapsed, "windows": {k: dict(v) for k, v in sorted(windows.items())}, "exact": exact,
            "statuses": dict(client_statuses), "reads": reads, "complete": complete}


def print_exactness(name: str, outcome: dict):
    print(f"  {name:18s} {BURST} calls from {BURST_CONNECTIONS} connections in {outcome['elapsed'] * 1000:.0f} ms; "
          f"answers per window (RateLimit-Reset: statuses) {outcome['windows']}: "
          f"{'exact' if outcome['exact'] else 'NOT EXACT'}")
    sizes = ", ".join(f"{n}" if s == 200 else f"HTTP {s}" for s, n, _ in outcome["reads"])
    print(f"  {name:18s} journal read {len(outcome['reads'])} times at once over new connections: rows {sizes}; "
          f"{'complete, statuses as answered' if outcome['complete'] else 'NOT COMPLETE'}")
