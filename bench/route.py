"""Issue 25's configuration, inside `make bench` (run.py): one v2 route, 600 rotating tokens.

`wrk -t2 -c32` on `/api/v2/etudiants?ine=1234567890A`, each request with the next of 600
tokens, per-address limit off, against:
  - bare Flask under gunicorn's DEFAULT sync workers (`gunicorn -w 2 bare_app:app`: no config
    file, no access log), the reference of the issue's table;
  - Prism 5 mocking the same route (the server run.py started on the same spec);
  - every sandbox target of the run (embedded store, Redis, baseline), as they are served;
  - with --experiments, the sandbox with 3 sync workers, and with gthread workers (2 x 8
    threads, SANDBOX_THREADS=8, the default before issue 25) on LMDB and on Redis; on a
    checkout without sandbox/workers.py one thread is a gthread worker's single thread.
Each round measures every target once, interleaved; the report gives each target's median and
the ratios to Prism computed round by round (median and spread), so that a slow moment of the
shared machine weighs on both sides of a ratio.
"""
from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

from common import BENCH, Server, free_port, measure, mint_tokens, start_sandbox, write_lua

ROUTE = "/api/v2/etudiants?ine=1234567890A"
ROUTE_MIX = [(ROUTE, "v2", 200)]
ROUTE_TOKENS = 600


def start_bare_sync(port: int, log_path: Path, workers=2) -> Server:
    """bench/bare_app.py under `gunicorn -w 2`: gunicorn's defaults (sync workers, no access log)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "bare_app:app"]
    return Server("bare Flask sync", command, env, port, log_path)


def start_sandbox_threads(port: int, data_dir: Path, log_path: Path, workers: int, threads: int,
                          args=(), root: Path | None = None) -> Server:
    """`particulier-sandbox serve` with SANDBOX_THREADS / SANDBOX_WORKERS set: with one thread,
    gunicorn's sync workers whose waiting answers are handed off (sandbox/workers.py)."""
    return start_sandbox(port, data_dir, log_path, args, root=root,
                         extra_env={"SANDBOX_THREADS": str(threads), "SANDBOX_WORKERS": str(workers)})


def route_script(tmp: Path, tokens=ROUTE_TOKENS) -> Path:
    return write_lua(tmp / "route.lua", mint_tokens(tokens), mix=ROUTE_MIX, count_statuses=True)


def start_targets(tmp: Path, args, redis_url: str | None = None) -> dict[str, Server]:
    """The targets of this section that the mix does not already run."""
    servers = {"bare Flask sync": start_bare_sync(free_port(), tmp / "bare-sync.log")}
    if getattr(args, "experiments", False):
        # the default (sync workers x2) runs in the mix already; here a third worker, and the
        # gthread workers (2 x 8 threads) that were the default until issue 25
        for name, workers, threads in (("sandbox sync x3", 3, 1), ("sandbox gthread 2x8", 2, 8)):
            servers[name] = start_sandbox_threads(
                free_port(), tmp / f"{name.replace(' ', '-')}-data", tmp / f"{name.replace(' ', '-')}.log", workers, threads)
        if redis_url:
            servers["Redis gthread 2x8"] = start_sandbox_threads(
                free_port(), tmp / "redis-gthread-data", tmp / "redis-gthread.log", 2, 8, ["--redis", redis_url])
    for server in servers.values():
        server.wait_ready()
    return servers


def run_rounds(targets: dict[str, Server], script: Path, args, log=print) -> dict[str, list[dict]]:
    results = {name: [] for name in targets}
    for round_ in range(args.rounds):
        for name, server in targets.items():
            result = measure(server, script, args)
            others = {k: v for k, v in result["statuses"].items() if k != "200"}
            results[name].append(result)
            log(f"  round {round_ + 1}: {name:18s} {result['rps']:8.0f} req/s  p50 {result['p50_us'] / 1000:6.1f} ms  "
                f"p99 {result['p99_us'] / 1000:7.1f} ms  CPU {result['cpu_us_per_request']:6.0f} µs/req"
                + (f"  NOT 200: {others}" if others else ""), flush=True)
    return results


def _spread(values) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def report(results: dict[str, list[dict]]):
    """The issue's table: req/s, vs Prism (per round: median and spread), p99, CPU per call."""
    print(f"\nissue 25's configuration: wrk on {ROUTE}, {ROUTE_TOKENS} tokens (median of rounds; "
          "ratios: median of the rounds' ratios, min-max)")
    prism = results.get("Prism")
    print(f"  {'target':18s} {'req/s':>7s} {'vs Prism':>18s} {'p99 ms':>7s} {'p99 vs Prism':>18s} "
          f"{'CPU µs/call':>11s} {'CPU vs Prism':>12s}")
    for name, runs in results.items():
        rps = statistics.median(r["rps"] for r in runs)
        p99 = statistics.median(r["p99_us"] for r in runs) / 1000
        cpu = statistics.median(r["cpu_us_per_request"] for r in runs)
        if prism:
            pairs = list(zip(runs, prism))
            vs = _spread([r["rps"] / p["rps"] for r, p in pairs])
            p99_vs = _spread([r["p99_us"] / p["p99_us"] for r, p in pairs])
            cpu_vs = f"{cpu / statistics.median(p['cpu_us_per_request'] for p in prism):.2f}"
        else:
            vs = p99_vs = cpu_vs = "-"
        print(f"  {name:18s} {rps:7.0f} {vs:>18s} {p99:7.1f} {p99_vs:>18s} {cpu:11.0f} {cpu_vs:>12s}")
    if not prism:
        print("  (Prism skipped: no ratio to it)")
    print("  goals: sandbox >= 1.5x Prism's req/s (floor 1.25x), p99 <= 0.5x Prism's; Redis >= 1.2x")
