"""`make bench`: the sandbox in its production configuration against a bare Flask app and Prism.

One run starts, on loopback ports:
  1. bare Flask: bench/bare_app.py (a constant JSON body) under gunicorn with the sandbox's own
     configuration file (sandbox/gunicorn_conf.py: 2 sync workers, preload);
  2. the sandbox: `particulier-sandbox serve`, the Docker image's command and environment, with
     every check on (token, validation, scopes, rate limit, journal); only --ip-rate-limit is
     raised, so that the per-address ceiling (1,000/minute) is not what is measured;
  3. Prism (`npx --yes @stoplight/prism-cli@5 mock`) on the same spec, when npx can fetch it;
and drives each with the same wrk request mix (v2 and v3 routes, hits and misses, a different
token on each request out of --tokens), then prints requests/s, latency percentiles, CPU
time per request of the server's processes, and the ratios sandbox/bare and sandbox/Prism.
It also measures the sandbox's start-up time with the bundled fixtures plus the official
staging folders, and the resident memory of its workers before and after --memory-requests.
Then issue 25's configuration (bench/route.py: one v2 route, 600 tokens, bare Flask under
gunicorn's default sync workers, Prism) and its checks (bench/checks.py: calls sleeping on a
latency fault, exact counts and a complete journal), on the same servers in the same run.

Nothing here is asserted: the numbers are printed (bench/README.md says what they mean).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import checks  # noqa: E402
import common  # noqa: E402
import route  # noqa: E402
from common import (BENCH_IP_RATE, CONSOLE, FIXTURES, MIX, SPEC, STAGING, Server,  # noqa: E402
                    free_port, measure, mint_tokens, rss_kib, run_wrk, start_bare, start_sandbox, write_lua)

PRISM = ["npx", "--yes", "@stoplight/prism-cli@5", "mock"]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", default="15s", help="wrk -d of each measured run [15s]")
    parser.add_argument("--warmup", default="8s", help="wrk -d of the warm-up run before each measure [8s]")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t [2]")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c [32]")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens the mix rotates through [2000]")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure bare / sandbox / Prism this many times, interleaved; medians are shown [3]")
    parser.add_argument("--memory-requests", type=int, default=200_000,
                        help="requests served before the sandbox's memory is read again [200000]")
    parser.add_argument("--no-prism", action="store_true", help="skip Prism")
    parser.add_argument("--no-redis", action="store_true", help="skip the sandbox on Redis")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also measure the sandbox of another checkout with its own .venv (e.g. a git worktree "
                             "of the code before a change), in the same run")
    parser.add_argument("--skip-startup", action="store_true", help="skip the start-up time measure")
    parser.add_argument("--no-mix", action="store_true",
                        help="skip the request mix and the memory reading: issue 25's route and checks only")
    parser.add_argument("--no-route", action="store_true", help="skip issue 25's single route and its checks")
    parser.add_argument("--experiments", action="store_true",
                        help="issue 25's route also on the sandbox with 3 sync workers and with gthread 2x8 (LMDB, Redis)")
    parser.add_argument("--stall-rounds", type=int, help="rounds of the latency-fault stall test [--rounds]")
    parser.add_argument("--prism-timeout", type=float, default=300, help="seconds Prism (npx) may take to start [300]")
    return parser.parse_args()


def seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


# --- start-up ---------------------------------------------------------------------------------
def measure_startup(tmp: Path, repeats=5, baseline: Path | None = None) -> list[tuple[str, list[float]]]:
    """Seconds from process start to the first 200 of an API route (a token checked, a case
    matched, masked and journaled), the production command."""
    first_answer = f"/api/v2/situations-pole-emploi?identifiant=default&token={mint_tokens(2)[0]}"
    setups = [("bundled spec + fixtures", [], None)]
    if STAGING.is_dir():
        setups.append(("bundled + official staging folders",
                       ["--spec", str(SPEC), "--fixtures", str(FIXTURES), "--fixtures", str(STAGING)], None))
    if baseline:
        setups.append(("baseline: bundled spec + fixtures", [], baseline))
    else:
        print(f"  (no {STAGING}: the staging folders are not measured)")
    results = []
    for label, args, root in setups:
        times = []
        for i in range(repeats):
            port = free_port()
            server = start_sandbox(port, tmp / f"startup-{label[:7]}-{i}", tmp / f"startup-{i}.log", args, root=root)
            try:
                times.append(server.wait_ready(path=first_answer, timeout=120))
            finally:
                server.stop()
        results.append((label, times))
    return results


# --- the targets -------------------------------------------------------------------------------
def start_prism(tmp: Path, timeout: float) -> Server | None:
    if not shutil.which("npx"):
        print("  Prism skipped: npx is not installed (Node.js)")
        return None
    port = free_port()
    server = Server("Prism", [*PRISM, "-p", str(port), str(SPEC)], None, port, tmp / "prism.log")
    try:
        server.wait_ready(path="/api/ping", timeout=timeout, any_status=True)
    except RuntimeError as exc:
        print(f"  Prism skipped: it did not start ({str(exc).splitlines()[0]}); last lines of its log:")
        print("    " + server.tail(5).replace("\n", "\n    "))
        server.stop()
        return None
    return server


class RedisServer:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                         "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip() == b"PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


def start_redis(tmp: Path):
    if not shutil.which("redis-server"):
        print("  sandbox on Redis skipped: redis-server is not installed")
        return None
    return RedisServer(tmp)


def expected_statuses() -> dict:
    share = {}
    for _, _, status in MIX:
        share[status] = share.get(status, 0) + 1
    return {status: count / len(MIX) for status, count in share.items()}


def check_sandbox(result: dict) -> list[str]:
    """The sandbox must answer the mix as designed: 200 on hits, 404 on misses, nothing else."""
    problems = []
    statuses = {int(k): v for k, v in result["statuses"].items()}
    others = {k: v for k, v in statuses.items() if k not in (200, 404)}
    if others:
        problems.append(f"unexpected statuses {others} (429: a token over 20/s, 503: store down)")
    total = sum(statuses.values()) or 1
    for status, share in expected_statuses().items():
        if abs(statuses.get(status, 0) / total - share) > 0.02:
            problems.append(f"{status}: {statuses.get(status, 0) / total:.1%} of answers, {share:.1%} expected")
    errors = {k: v for k, v in result["errors"].items() if k != "status" and v}
    if errors:
        problems.append(f"socket errors {errors}")
    return problems


def workers_rss(server: Server) -> list[tuple[int, int]]:
    """(RssAnon, RssFile) of each worker."""
    return [(rss_kib(pid) or 0, rss_kib(pid, "RssFile") or 0) for pid in server.workers()]


def main():
    args = parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk (.ci/run installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    print(f"particulier-sandbox bench: wrk -t{args.threads} -c{args.connections} -d{args.duration} "
          f"(warm-up {args.warmup}), {args.tokens} tokens, {args.rounds} round(s); logs in {tmp}")
    print("request mix (one token per request, in turn): " + ", ".join(
        f"{path.split('?')[0]} -> {status}" for path, _, status in MIX))

    if not args.skip_startup:
        print("\nstart-up (process start -> first 200 of an API route), `particulier-sandbox serve`:")
        for label, times in measure_startup(tmp, baseline=args.baseline):
            print(f"  {label:40s} median {statistics.median(times):.2f} s   "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times)})")

    tokens = mint_tokens(args.tokens)
    script = write_lua(tmp / "mix.lua", tokens, count_statuses=True)

    servers = {}
    prism = redis = None
    try:
        servers["bare Flask"] = start_bare(free_port(), tmp / "bare.log")
        servers["sandbox"] = start_sandbox(free_port(), tmp / "sandbox-data", tmp / "sandbox.log")
        if args.baseline:
            servers["baseline"] = start_sandbox(free_port(), tmp / "baseline-data", tmp / "baseline.log",
                                                root=args.baseline)
        redis = start_redis(tmp) if not args.no_redis else None
        if redis:
            servers["sandbox Redis"] = start_sandbox(free_port(), tmp / "sandbox-redis-data", tmp / "sandbox-redis.log",
                                                     ["--redis", redis.url])
        for server in servers.values():
            server.wait_ready()
            deadline = time.monotonic() + 30
            while len(server.workers()) < 2 and time.monotonic() < deadline:  # gunicorn forks them in turn
                time.sleep(0.1)
        sandbox = servers["sandbox"]
        rss = {"after start": (0, workers_rss(sandbox))}
        # The working set is built by the first calls (each worker's token cache, thread arenas,
        # the pages of shared libraries and of the counter file first touched): read it once
        # built, then see whether --memory-requests more calls make it grow.
        if not args.no_mix:
            run_wrk(sandbox.url, script, args.threads, args.connections, args.warmup)
        warm = sum(common.access_log_statuses(sandbox.log_path).values())
        rss["after the warm-up"] = (warm, workers_rss(sandbox))
        if not args.no_prism:
            print("\nstarting Prism (npx @stoplight/prism-cli@5; the first run downloads it)...")
            prism = start_prism(tmp, args.prism_timeout)
            if prism:
                servers["Prism"] = prism

        if not args.no_route:
            issue_25(tmp, args, servers, redis.url if redis else None)
        if args.no_mix:
            return
        results = {name: [] for name in servers}
        served = 0
        for round_ in range(args.rounds):
            for name, server in servers.items():
                result = measure(server, script, args)
                results[name].append(result)
                if name.startswith("sandbox") or name == "baseline":
                    served += result["requests"]
                    problems = check_sandbox(result)
                    for problem in problems:
                        print(f"  WARNING sandbox: {problem}")
                print(f"  round {round_ + 1}: {name:10s} {result['rps']:8.0f} req/s  p50 {result['p50_us'] / 1000:6.1f} ms  "
                      f"p99 {result['p99_us'] / 1000:7.1f} ms  CPU {result['cpu_us_per_request']:6.0f} µs/req  "
                      f"statuses {result['statuses']}", flush=True)
        # the warm-ups of the sandbox count too: read its request counter from the access log
        served = sum(common.access_log_statuses(sandbox.log_path).values())
        while served - warm < args.memory_requests:
            run_wrk(sandbox.url, script, args.threads, args.connections, "15s")
            served = sum(common.access_log_statuses(sandbox.log_path).values())
        rss[f"{served - warm:,} requests later"] = (served, workers_rss(sandbox))
        report(args, results, rss)
    finally:
        for server in servers.values():
            server.stop()
        if redis:
            redis.stop()


def issue_25(tmp: Path, args, servers: dict, redis_url: str | None = None):
    """Issue 25's single route on every target, then its two checks on each sandbox target."""
    print(f"\nissue 25: wrk -t{args.threads} -c{args.connections} -d{args.duration} on {route.ROUTE}, "
          f"{route.ROUTE_TOKENS} tokens, {args.rounds} round(s)", flush=True)
    script = route.route_script(tmp)
    extra = route.start_targets(tmp, args, redis_url)
    try:
        targets = {**extra, **{k: v for k, v in servers.items() if k != "bare Flask"}}
        route.report(route.run_rounds(targets, script, args))
        sandboxes = {k: v for k, v in targets.items() if k.startswith(("sandbox", "Redis")) or k == "baseline"}
        print(f"\nlatency-fault stall: {checks.STALLED} calls sleeping {checks.LATENCY_MS} ms at once, "
              "the others' throughput with / without them")
        for name, server in sandboxes.items():
            checks.print_stall(name, checks.stall(server, script, args, args.stall_rounds or args.rounds))
        print(f"\nexactness: one token, {checks.BURST} calls from {checks.BURST_CONNECTIONS} connections at once "
              "(20 a second per token), then its journal")
        for name, server in sandboxes.items():
            checks.print_exactness(name, checks.exactness(server))
    finally:
        for server in extra.values():
            server.stop()


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def report(args, results, rss):
    print("\nresults (median of rounds)")
    print(f"  {'target':12s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'CPU µs/req':>11s}")
    summary = {}
    for name, runs in results.items():
        summary[name] = {k: median_of(runs, k) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_request")}
        s = summary[name]
        print(f"  {name:12s} {s['rps']:8.0f} {s['p50_us'] / 1000:8.1f} {s['p99_us'] / 1000:8.1f} "
              f"{s['cpu_us_per_request']:11.0f}")
    sandbox, bare = summary["sandbox"], summary["bare Flask"]
    print(f"\n  sandbox / bare Flask: {sandbox['rps'] / bare['rps']:.2f}x requests/s, "
          f"p99 {sandbox['p99_us'] / bare['p99_us']:.2f}x, CPU per request {sandbox['cpu_us_per_request'] / bare['cpu_us_per_request']:.2f}x")
    if "baseline" in summary:
        base = summary["baseline"]
        print(f"  baseline / bare Flask: {base['rps'] / bare['rps']:.2f}x requests/s, p99 {base['p99_us'] / bare['p99_us']:.2f}x; "
              f"sandbox / baseline: {sandbox['rps'] / base['rps']:.2f}x requests/s")
    if "sandbox Redis" in summary:
        on_redis = summary["sandbox Redis"]
        print(f"  sandbox on Redis / bare Flask: {on_redis['rps'] / bare['rps']:.2f}x requests/s, "
              f"p99 {on_redis['p99_us'] / bare['p99_us']:.2f}x")
    if "Prism" in summary:
        prism = summary["Prism"]
        print(f"  sandbox / Prism:      {sandbox['rps'] / prism['rps']:.2f}x requests/s, "
              f"p99 {sandbox['p99_us'] / prism['p99_us']:.2f}x "
              f"(Prism / bare Flask: {prism['rps'] / bare['rps']:.2f}x)")
    else:
        print("  sandbox / Prism: not measured (Prism skipped)")
    print("\n  sandbox worker memory (RssAnon of each worker: its own heap; RssFile: mapped files, the store's included):")
    for label, (served, kib) in rss.items():
        print(f"    {label:28s} {', '.join(f'{a / 1024:6.1f}' for a, _ in kib)} MiB   "
              f"(mapped files {', '.join(f'{f / 1024:.0f}' for _, f in kib)} MiB; {served:,} requests served)")
    start, warm, end = ([a for a, _ in kib] for _, kib in rss.values())
    growth = max((e - w) / w for w, e in zip(warm, end)) if warm and end else float("nan")
    print(f"    growth over the last {args.memory_requests:,}+ requests: {growth:+.1%} (goal: within 10%); "
          f"since start: {max((e - s) / s for s, e in zip(start, end)):+.1%}")
    print(f"\n  notes: the sandbox ran `{CONSOLE.name} serve --ip-rate-limit {BENCH_IP_RATE}` with the Docker "
          "image's environment\n  (2 workers, access log on); --ip-rate-limit is the only change, so that "
          "the per-address ceiling\n  (1,000/minute) is not what is measured. The per-token limit (20/s) stays on: "
          f"the mix spreads\n  its calls over {args.tokens} tokens. bare Flask uses the same gunicorn "
          "configuration file and access log.")


if __name__ == "__main__":
    main()
