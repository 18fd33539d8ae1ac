"""Floods against the production command, one minute each, with a victim alongside.

Not a test (it takes minutes, and its figures are for a person to read): the floods of issue 24,
each against a fresh `particulier-sandbox serve` (the Docker image's configuration, 2 workers):

- journal: 150 tokens, each within production's 20 calls/s, every call with an 8,000-character
  query (refused calls are journaled too);
- personas: personas of just under the size quota (256 KiB) and tiny ones, as fast as the
  /sandbox/* limit (100/s per address) lets one address create them, a new token whenever the
  token's quota refuses.

Meanwhile a victim (another token) calls `identifiant=default` on v3 about 14 times a second.
For each flood it prints the victim's statuses and p50/p99, the flood's statuses, the store's
size against its bound (GET /sandbox/usage, and the LMDB map's pages in use or Redis' memory)
and each worker's resident memory (VmRSS and RssAnon) before and after.

The per-address limit of API routes is off (the issue's flooder stays under it by spreading over
addresses; here flooder and victim share 127.0.0.1). `--journal-bytes` lowers the journals'
bound so that one minute reaches it (at default it takes longer than a minute from one host).

    .venv/bin/python bench/abuse.py [--seconds 60] [--journal-bytes 16MiB] [--redis] [--floods journal,personas]
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RECIPIENT, SECRET, free_port, rss_kib, start_sandbox  # noqa: E402

VICTIM_PATH = f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}"
LONG = "x" * 8000
PERSONA_CASE = "api_particulier_v3_france_travail_statut_with_identifiant/200_default.yaml"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60, help="length of each flood [60]")
    parser.add_argument("--floods", default="journal,personas", help="which floods [journal,personas]")
    parser.add_argument("--journal-bytes", default=None, help="SANDBOX_JOURNAL_BYTES for the run [256MiB]")
    parser.add_argument("--redis", action="store_true", help="also run each flood on a redis-server")
    parser.add_argument("--threads", type=int, default=8, help="flooding threads [8]")
    return parser.parse_args()


def token(ttl=3600) -> str:
    from sandbox.api.auth import mint
    from sandbox.production.scopes import ScopeCatalogue
    return mint(SECRET, ScopeCatalogue().all_scopes(), ttl)[0]


class Victim(threading.Thread):
    def __init__(self, url):
        super().__init__(daemon=True)
        self.url, self.token = url + VICTIM_PATH, token()
        self.session = requests.Session()
        self.statuses = collections.Counter()
        self.latencies = []
        self.changed = 0
        self.before = self.call()[1]
        self.stop = threading.Event()

    def call(self):
        started = time.perf_counter()
        try:
            answer = self.session.get(self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
            status, body = answer.status_code, answer.content
        except requests.RequestException as exc:
            status, body = type(exc).__name__, b""
        return status, body, time.perf_counter() - started

    def run(self):
        while not self.stop.is_set():
            status, body, seconds = self.call()
            self.statuses[status] += 1
            self.latencies.append(seconds)
            self.changed += body != self.before
            time.sleep(0.07)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000 if ordered else float("nan")


def journal_flood(url, seconds, threads):
    tokens = [token() for _ in range(150)]
    statuses = collections.Counter()
    deadline = time.time() + seconds

    def work(k):
        session, i = requests.Session(), k
        while time.time() < deadline:
            try:
                answer = session.get(f"{url}/api/v2/situations-pole-emploi?identifiant=default&q={LONG}{i}",
                                     headers={"X-Api-Key": tokens[i % len(tokens)]}, timeout=30)
                statuses[answer.status_code] += 1
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
            i += threads
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return statuses, tokens[-1]


def persona_flood(url, seconds, threads):
    statuses, reasons = collections.Counter(), collections.Counter()
    deadline = time.time() + seconds
    last = [token()]

    def work(k):
        session, mine, i = requests.Session(), token(), k
        while time.time() < deadline:
            size = 250_000 if i % 2 else 10
            body = {"like": PERSONA_CASE, "params": {"identifiant": f"flood.{k}.{i}"},
                    "payload": {"data": {"identifiant": f"flood.{k}.{i}"}}, "description": "d" * size}
            try:
                answer = session.post(url + "/sandbox/personas", json=body, headers={"X-Api-Key": mine}, timeout=30)
                statuses[answer.status_code] += 1
                if answer.status_code in (413, 429):
                    reason = answer.json().get("reason") or "rate limit of /sandbox/* (100/s per address)"
                    reasons[reason.split(" atteint")[0]] += 1
                    if "token_persona" in reason:
                        mine = last[0] = token()  # a new token: the one quota a flooder can dodge
                    elif answer.status_code == 429 and "Quota" not in reason:
                        time.sleep(0.05)
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
            i += threads
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return statuses, last[0], reasons


def memory(server):
    return {pid: (rss_kib(pid, "VmRSS"), rss_kib(pid, "RssAnon")) for pid in server.workers()}


def store_pages(store_dir: Path) -> str:
    import lmdb
    env = lmdb.open(str(store_dir), readonly=True, lock=False, max_dbs=16)
    try:
        info, psize = env.info(), env.stat()["psize"]
        used = (info["last_pgno"] + 1) * psize
    finally:
        env.close()
    data = store_dir / "data.mdb"  # writemap: the file is as large as the map (sparse)
    return (f"LMDB: {used / 2**20:.1f} MiB of pages in use / {data.stat().st_size / 2**20:.0f} MiB map "
            f"(on disk: {data.stat().st_blocks * 512 / 2**20:.1f} MiB)")


def redis_memory(url) -> str:
    import redis
    info = redis.Redis.from_url(url).info("memory")
    return f"Redis used_memory: {info['used_memory'] / 2**20:.1f} MiB"


def run(name, flood, args, redis_url=None):
    work = Path(tempfile.mkdtemp(prefix="abuse-"))
    extra = {"SANDBOX_IP_RATE_LIMIT": "off", "SANDBOX_ACCESS_LOG": ""}
    if args.journal_bytes:
        extra["SANDBOX_JOURNAL_BYTES"] = args.journal_bytes
    port = free_port()
    server = start_sandbox(port, work / "data", work / "server.log", ("--redis", redis_url) if redis_url else (),
                           extra)
    try:
        server.wait_ready()
        time.sleep(2)  # every worker forked and serving
        before = memory(server)
        victim = Victim(server.url)
        victim.start()
        time.sleep(3)  # the victim's calls before the flood, for comparison
        quiet = sum(victim.statuses.values())
        flooded = flood(server.url, args.seconds, args.threads)
        victim.stop.set()
        victim.join(60)
        after = memory(server)
        time.sleep(1.5)  # the flood's last second out of the per-address limit of /sandbox/*
        usage = requests.get(server.url + "/sandbox/usage", headers={"X-Api-Key": flooded[1]}, timeout=30).json()
        log = (work / "server.log").read_text(errors="replace")
        where = redis_memory(redis_url) if redis_url else store_pages(work / "data" / "store")
        print(f"\n== {name} flood, {args.seconds} s, {'Redis' if redis_url else 'LMDB'} ==")
        print(f"  flood statuses:  {dict(flooded[0])}")
        if len(flooded) > 2:
            print(f"  refusals:        {dict(flooded[2])}")
        print(f"  victim statuses: {dict(victim.statuses)} ({quiet} before the flood), answers changed: "
              f"{victim.changed}, p50 {percentile(victim.latencies, .5):.1f} ms, p99 "
              f"{percentile(victim.latencies, .99):.1f} ms")
        inst = usage["instance"]
        print(f"  journals: {inst['journal_bytes'] / 2**20:.2f} MiB / bound {inst['limits']['journal_bytes'] / 2**20:.0f} MiB;"
              f" personas: {inst['personas']} / {inst['limits']['personas']}, "
              f"{inst['persona_bytes'] / 2**20:.2f} MiB / {inst['limits']['persona_bytes'] / 2**20:.0f} MiB")
        print(f"  {where}")
        print(f"  server log: {log.count('Traceback')} tracebacks, {log.count('WORKER TIMEOUT')} worker timeouts, "
              f"{log.count('Booting worker')} workers booted")
        for pid in before:
            b, a = before[pid], after.get(pid, (None, None))
            print(f"  worker {pid}: VmRSS {b[0] / 1024:.0f} -> {(a[0] or 0) / 1024:.0f} MiB, "
                  f"RssAnon {b[1] / 1024:.0f} -> {(a[1] or 0) / 1024:.0f} MiB")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main():
    args = parse_args()
    floods = {"journal": journal_flood, "personas": persona_flood}
    redis_process = None
    backends = [None]
    if args.redis:
        binary = shutil.which("redis-server")
        if binary is None:
            print("redis-server is not installed: LMDB only")
        else:
            redis_port = free_port()
            redis_process = subprocess.Popen([binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                              "--appendonly", "no"], stdout=subprocess.DEVNULL)
            time.sleep(0.5)
            backends.append(f"redis://127.0.0.1:{redis_port}/0")
    try:
        for name in args.floods.split(","):
            for redis_url in backends:
                if redis_url:
                    import redis
                    redis.Redis.from_url(redis_url).flushall()
                run(name, floods[name], args, redis_url)
    finally:
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait()


if __name__ == "__main__":
    main()
