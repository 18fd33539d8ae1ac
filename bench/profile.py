"""Where a loaded worker's CPU goes: py-spy on one worker of the sandbox under issue 25's wrk run.

    .venv/bin/python bench/profile.py [--threads 1] [--workers 2] [--redis] [--seconds 10]

Starts `particulier-sandbox serve` (the bench's environment; SANDBOX_THREADS / SANDBOX_WORKERS
from the flags), drives it with wrk on bench/route.py's route and 600 tokens, and records one
worker with `py-spy record --format raw` (the `bench` extra installs py-spy; it needs ptrace
rights on the worker: root, or kernel.yama.ptrace_scope 0). Prints the share of the worker's
samples spent in each step (a sample counts in every step on its stack) and the functions
with the most samples of their own. The collapsed stacks stay in the log folder (flamegraph.pl
or speedscope read them).
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, run_wrk  # noqa: E402
from route import route_script, start_sandbox_threads  # noqa: E402
from run import RedisServer  # noqa: E402

# step -> the functions and files on the stack that mark it (any of them)
STEPS = [
    ("the WSGI app (all the sandbox's own work)", "dispatch (sandbox/application.py"),
    ("  pipeline: authenticate (token)", "authenticate (sandbox/api/auth.py"),
    ("  pipeline: validate", "validate (sandbox/production/spec.py"),
    ("  pipeline: find the case and mask", "_lookup (sandbox/api/pipeline.py"),
    ("  pipeline: journal entry", "entry (sandbox/api/journal.py"),
    ("  the store step (count, revocation, journal row)", "count (sandbox/store/"),
    ("  werkzeug Request", "__init__ (werkzeug/"),
    ("gunicorn: parse the request", "parse (gunicorn/http/message.py"),
    ("gunicorn: write the answer", ("write (gunicorn/http/wsgi.py", "flush (sandbox/workers.py")),
    ("gunicorn: access log", ("access (gunicorn/glogging.py", "access (sandbox/server.py")),
    ("gunicorn: accept and close", ("close_graceful (gunicorn/util.py", "close_at_once (sandbox/workers.py",
                                    "_accept (sandbox/workers.py")),
    ("the lobby (a request come whole?)", ("arrive (sandbox/workers.py", "readable (sandbox/workers.py")),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", action="store_true", help="the sandbox on a redis-server the script starts")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second [250]")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL: CPU, not waits")
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    tmp = Path(tempfile.mkdtemp(prefix="sandbox-profile-"))
    redis = RedisServer(tmp) if args.redis else None
    server = start_sandbox_threads(free_port(), tmp / "data", tmp / "sandbox.log", args.workers, args.threads,
                                   ["--redis", redis.url] if redis else [])
    try:
        server.wait_ready()
        while len(server.workers()) < args.workers:
            time.sleep(0.1)
        script = route_script(tmp)
        run_wrk(server.url, script, duration="3s")
        load = threading.Thread(target=run_wrk, args=(server.url, script),
                                kwargs={"duration": f"{args.seconds + 4}s"})
        load.start()
        time.sleep(1)
        out = tmp / "worker.txt"
        subprocess.run([spy, "record", "--pid", str(server.workers()[0]), "--duration", str(args.seconds),
                        "--rate", str(args.rate), "--format", "raw", "--output", str(out), "--nonblocking", *(["--gil"] if args.gil else [])],
                       check=True, capture_output=True)
        load.join()
        report(out, args)
    finally:
        server.stop()
        if redis:
            redis.stop()


def report(path: Path, args):
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            stacks.append((stack, int(count)))
    total = sum(c for _, c in stacks) or 1
    print(f"py-spy, one worker of {args.workers} x {args.threads} thread(s){' on Redis' if args.redis else ''}, "
          f"{total} samples{' holding the GIL' if args.gil else ''}")
    for label, marks in STEPS:
        marks = (marks,) if isinstance(marks, str) else marks
        share = sum(c for s, c in stacks if any(mark in s for mark in marks)) / total
        print(f"  {label:52s} {share:6.1%}")
    own = collections.Counter()
    for stack, count in stacks:
        own[stack.split(";")[-1]] += count
    print("  functions with the most samples of their own:")
    for frame, count in own.most_common(12):
        print(f"    {count / total:6.1%}  {frame}")
    print(f"  collapsed stacks: {path}")


if __name__ == "__main__":
    main()
