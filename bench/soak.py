"""`make soak`: sustained load on the production command, watching for leaks and errors.

Starts `particulier-sandbox serve` as the Docker image runs it (only --ip-rate-limit raised,
as in `make bench`), then drives it with wrk in back-to-back slices of --interval seconds for
--seconds in all, over --tokens tokens (few enough that each token's journal fills and gets
trimmed, many enough to stay under 20 calls/second/token); the journal keeps --journal-size
calls per token (SANDBOX_JOURNAL_SIZE; 1,000 by default in production, 100 here so that
trimming runs within the first minute). After each slice it samples: requests/s and p99 of
the slice, the answers' statuses, each worker's resident memory (/proc/<pid>/status VmRSS) and
open file descriptors (/proc/<pid>/fd: all, and those that are not sockets, since client
connections come and go), the journal's row count and the store files' sizes. It prints a
table, then a verdict:
  - no answer other than the mix's 200 and 404, no socket error, no traceback in the log;
  - memory: no worker grows by more than --rss-slack MiB from the first half to the second;
  - descriptors: no worker's non-socket count grows in the second half (no leak per request);
  - journal: at most journal_size (+ 50 rows of trimming slack per worker) rows per token, and the
    store files stop growing once every token's journal is full.
Not part of the test suite: it takes minutes, and its thresholds are for a person to read.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (MIX, free_port, mint_tokens, open_fds, rss_kib, run_wrk, start_sandbox,  # noqa: E402
                    write_lua)

TRIM_SLACK = 0  # each call trims its token's rows in the same transaction: the bound is exact


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=300, help="total load time [300]")
    parser.add_argument("--interval", type=int, default=10, help="seconds between samples [10]")
    parser.add_argument("--tokens", type=int, default=200, help="tokens the load rotates through [200]")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t [2]")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c [32]")
    parser.add_argument("--journal-size", type=int, default=100,
                        help="calls kept per token (SANDBOX_JOURNAL_SIZE) [100; production 1000]")
    parser.add_argument("--rss-slack", type=float, default=8.0,
                        help="MiB a worker may grow from the first half to the second [8]")
    return parser.parse_args()


def journal_rows(store_dir: Path) -> tuple[int, int]:
    """(rows, largest rows of one token), read-only, as any other process may read the store."""
    import struct

    import lmdb
    env = lmdb.open(str(store_dir), readonly=True, max_dbs=4)
    try:
        with env.begin() as txn:
            total = txn.stat(env.open_db(b"journal", txn=txn, create=False))["entries"]
            meta = env.open_db(b"meta", txn=txn, create=False)
            largest = max((struct.unpack_from(">Q", v)[0] for k, v in txn.cursor(db=meta) if k.startswith(b"n:")),
                          default=0)
    finally:
        env.close()
    return total, largest


def store_megabytes(data_dir: Path) -> float:
    """Disk the store uses (its file is sparse: its length is the map's size, not what it holds)."""
    return sum(p.stat().st_blocks * 512 for p in (data_dir / "store").glob("*.mdb")) / 1e6


def main():
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-soak-"))
    data = tmp / "data"
    script = write_lua(tmp / "mix.lua", mint_tokens(args.tokens), count_statuses=True)
    server = start_sandbox(free_port(), data, tmp / "sandbox.log",
                           extra_env={"SANDBOX_JOURNAL_SIZE": str(args.journal_size)})
    slack = TRIM_SLACK * 2  # two workers (the Docker image's SANDBOX_WORKERS)
    rows_bound = args.tokens * (args.journal_size + slack)
    samples, bad_statuses, socket_errors = [], {}, {}
    try:
        server.wait_ready()
        deadline = time.monotonic() + 30
        while len(server.workers()) < 2 and time.monotonic() < deadline:  # gunicorn forks them in turn
            time.sleep(0.1)
        workers = server.workers()
        print(f"soak: {args.seconds} s of wrk -t{args.threads} -c{args.connections} over {args.tokens} tokens, "
              f"sampled every {args.interval} s; workers {workers}; logs in {tmp}")
        print(f"{'t (s)':>6} {'req/s':>7} {'p99 ms':>7} {'statuses':>22}  "
              + "  ".join(f"{'RSS MiB':>8} {'fds':>7}" for _ in workers)
              + f" {'journal rows':>13} {'max/token':>9} {'store MB':>8}")
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            result = run_wrk(server.url, script, args.threads, args.connections, f"{args.interval}s")
            statuses = {int(k): v for k, v in result["statuses"].items()}
            for status, count in statuses.items():
                if status not in {s for _, _, s in MIX}:
                    bad_statuses[status] = bad_statuses.get(status, 0) + count
            for kind, count in result["errors"].items():
                if kind != "status" and count:
                    socket_errors[kind] = socket_errors.get(kind, 0) + count
            if server.workers() != workers:
                print(f"  the workers changed: {workers} -> {server.workers()} (a worker died or was restarted)")
                workers = server.workers()
            rss = [rss_kib(pid) or 0 for pid in workers]
            fds = [open_fds(pid) or 0 for pid in workers]
            files = [open_fds(pid, sockets=False) or 0 for pid in workers]
            rows, largest = journal_rows(data / "store")
            sample = {"t": time.monotonic() - started, "rps": result["rps"], "p99": result["p99_us"] / 1000,
                      "rss": rss, "fds": fds, "files": files, "rows": rows, "largest": largest, "store": store_megabytes(data)}
            samples.append(sample)
            status_text = " ".join(f"{k}:{v}" for k, v in sorted(statuses.items()))
            print(f"{sample['t']:6.0f} {sample['rps']:7.0f} {sample['p99']:7.1f} {status_text:>22}  "
                  + "  ".join(f"{r / 1024:8.1f} {f:3d}/{n:<3d}" for r, f, n in zip(rss, fds, files))
                  + f" {rows:13,d} {largest:9d} {sample['store']:8.1f}", flush=True)
    finally:
        server.stop()
    verdict(args, samples, bad_statuses, socket_errors, rows_bound, slack, server)


def verdict(args, samples, bad_statuses, socket_errors, rows_bound, slack, server):
    problems = []
    if bad_statuses:
        problems.append(f"answers other than the mix's: {bad_statuses}")
    if socket_errors:
        problems.append(f"socket errors: {socket_errors}")
    if len(samples) >= 4:
        half = len(samples) // 2
        for i in range(len(samples[0]["rss"])):
            first = max(s["rss"][i] for s in samples[:half]) / 1024
            second = max(s["rss"][i] for s in samples[half:]) / 1024
            if second - first > args.rss_slack:
                problems.append(f"worker {i + 1} memory grew {first:.1f} -> {second:.1f} MiB between the halves")
            files = [s["files"][i] for s in samples]
            if max(files[half:]) > max(files[:half]):
                problems.append(f"worker {i + 1} open files keep growing: {files}")
    else:
        problems.append("too few samples to judge memory and descriptors (use --seconds >= 4 x --interval)")
    largest = max((s["largest"] for s in samples), default=0)
    if largest > args.journal_size + slack:
        problems.append(f"a token holds {largest} journal rows (bound {args.journal_size} + {slack})")
    full = [s for s in samples if s["largest"] >= args.journal_size]
    if len(full) >= 4 and full[-1]["store"] > 1.5 * full[len(full) // 2]["store"] + 5:
        problems.append(f"the store files keep growing once the journals are full: "
                        f"{full[len(full) // 2]['store']:.1f} -> {full[-1]['store']:.1f} MB")
    if any(s["rows"] > rows_bound for s in samples):
        problems.append(f"the journal holds {samples[-1]['rows']} rows (bound {rows_bound})")
    if "Traceback" in server.log_path.read_text(errors="replace"):
        problems.append(f"a traceback in the server log ({server.log_path})")
    total = sum(s["rps"] * args.interval for s in samples)
    print(f"\n{len(samples)} samples, about {total:,.0f} requests; journal rows at the end "
          f"{samples[-1]['rows'] if samples else 0:,} (bound {rows_bound:,}), largest per token {largest}")
    if problems:
        print("verdict: FAIL\n  " + "\n  ".join(problems))
        sys.exit(1)
    print("verdict: PASS (no error answer, memory and open files flat, journal bounded)")


if __name__ == "__main__":
    main()
