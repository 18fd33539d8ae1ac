"""What `make bench` (run.py) and `make soak` (soak.py) share: starting the servers exactly as
production does, a wrk request mix over many tokens, and /proc readings of the workers."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SPEC = ROOT / "spec" / "open-api.yml"
FIXTURES = ROOT / "fixtures"
STAGING = ROOT.parent / "shared" / "reference" / "staging-payloads"
SECRET = "bench-secret-" + "b" * 40
RECIPIENT = "13002526500013"
CONSOLE = Path(sys.executable).parent / "particulier-sandbox"
# The per-address ceiling (1,000/minute) would answer 429 after a second of load from one
# client: the bench raises it, so that what is measured is the sandbox, not its IP limit.
# The per-token limit (20/second) stays: the mix spreads its calls over many tokens.
BENCH_IP_RATE = "100000000/minute"

# The request mix: (path and query, version, expected status). v2 and v3, hits and misses.
MIX = [
    ("/api/v2/situations-pole-emploi?identifiant=default", "v2", 200),
    ("/api/v2/etudiants?ine=1234567890A", "v2", 200),
    ("/api/v2/etudiants-boursiers?ine=1234567890A", "v2", 200),
    ("/api/v2/etudiants?ine=0000000000Z", "v2", 404),
    (f"/v3/mesri/statut_etudiant/ine?ine=1234567890A&recipient={RECIPIENT}", "v3", 200),
    (f"/v3/france_travail/statut/identifiant?identifiant=default&recipient={RECIPIENT}", "v3", 200),
    (f"/v3/france_travail/statut/identifiant?identifiant=inconnu99&recipient={RECIPIENT}", "v3", 404),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, headers=None, timeout=2.0) -> int | None:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, urllib.error.URLError):
        return None


class Server:
    """A server process in its own session (so the whole tree stops together)."""

    def __init__(self, name, args, env, port, log_path: Path, cwd=ROOT):
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.log = open(log_path, "w+b")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(args, env=env, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, path="/api/ping", timeout=60.0, any_status=False) -> float:
        """Seconds from process start to the first 200 on `path` (any answer when any_status)."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            status = http_status(self.url + path, timeout=1.0)
            if status == 200 or (any_status and status is not None):
                return time.perf_counter() - self.started
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")

    def tail(self, lines=30) -> str:
        self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def workers(self) -> list[int]:
        """The gunicorn workers: the children of the master."""
        try:
            text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        except OSError:
            return []
        return sorted(int(p) for p in text.split())

    def tree(self) -> list[int]:
        """Every process of the server's session (master, workers; npx and node for Prism)."""
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == self.process.pid:  # field 6 of stat: the session id
                    pids.append(int(entry))
        return pids

    def stop(self, timeout=30):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            except ProcessLookupError:
                pass
        self.log.close()


def rss_kib(pid: int, field: str = "RssAnon") -> int | None:
    """A worker's resident memory of its own (RssAnon: heap and stacks). VmRSS also counts the
    pages of files it maps, among them the embedded store (LMDB), which are the page cache shared
    by every process and grow with the journal's bounded size, not with a leak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int, sockets: bool = True) -> int | None:
    """Open descriptors of `pid`; without the sockets (client connections come and go) when asked."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    if sockets:
        return len(names)
    count = 0
    for name in names:
        try:
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


def sandbox_env(port: int, data_dir: Path, access_log: str = "-", extra=None) -> dict:
    """The Docker image's environment (Dockerfile ENV), on a loopback port and a private data folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOX_")}
    env.update({"SANDBOX_SPEC": str(SPEC), "SANDBOX_FIXTURES": str(FIXTURES), "SANDBOX_DATA_DIR": str(data_dir),
                "SANDBOX_PORT": str(port), "SANDBOX_WORKERS": "2", "SANDBOX_ACCESS_LOG": access_log,
                "SANDBOX_TOKEN_SECRET": SECRET, "PYTHONUNBUFFERED": "1"})
    env.update(extra or {})
    return env


def start_sandbox(port: int, data_dir: Path, log_path: Path, args=(), extra_env=None, root: Path | None = None) -> Server:
    """`particulier-sandbox serve`: the Docker image's command, with the production gunicorn config.
    `root`: another checkout (its .venv, spec and fixtures), e.g. the code before a change."""
    console = root / ".venv" / "bin" / "particulier-sandbox" if root else CONSOLE
    if root:
        extra_env = {"SANDBOX_SPEC": str(root / "spec" / "open-api.yml"), "SANDBOX_FIXTURES": str(root / "fixtures"),
                     **(extra_env or {})}
    command = [str(console), "serve", "--host", "127.0.0.1", "--ip-rate-limit", BENCH_IP_RATE, *args]
    return Server("sandbox", command, sandbox_env(port, data_dir, extra=extra_env), port, log_path)


def start_bare(port: int, log_path: Path) -> Server:
    """bench/bare_app.py under gunicorn with sandbox/gunicorn_conf.py: same workers, threads, log."""
    env = sandbox_env(port, log_path.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "gunicorn", "-c", "python:sandbox.gunicorn_conf", "bare_app:app"]
    return Server("bare Flask", command, env, port, log_path)


def mint_tokens(count: int) -> list[str]:
    """`count` tokens: half hold every scope, half every scope but one per route of the mix
    (so the scope mask really removes fields), each still admitted on every route."""
    from sandbox.api.auth import mint
    from sandbox.production.scopes import ScopeCatalogue
    catalogue = ScopeCatalogue()
    every = catalogue.all_scopes()
    dropped = set()
    for op in catalogue.operations.values():
        if len(op.scopes) > 1:
            dropped.add(sorted(op.scopes)[0])
    partial = [s for s in every if s not in dropped]
    for op in catalogue.operations.values():  # never leave a route of the mix with no scope held
        if not op.scopes & set(partial):
            partial.append(sorted(op.scopes)[-1])
    return [mint(SECRET, every if i % 2 else partial, 7 * 86400)[0] for i in range(count)]


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def write_lua(path: Path, tokens: list[str], mix=MIX, count_statuses=False) -> Path:
    """A wrk script: request i uses token i and path i % len(mix), requests pre-formatted once
    per thread so the client spends next to nothing per request."""
    lines = ["local tokens = {"] + [f"  {_lua_string(t)}," for t in tokens] + ["}"]
    lines += ["local mix = {"] + [f"  {{{_lua_string(p)}, {'true' if v == 'v2' else 'false'}}}," for p, v, _ in mix] + ["}"]
    lines.append("""
local threads = {}
local next_id = 0
function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local reqs, n, i = {}, 0, 0
statuses = {}
function init(args)
  for k, t in ipairs(tokens) do
    local m = mix[(k - 1) % #mix + 1]
    local headers
    if m[2] then headers = {["X-Api-Key"] = t} else headers = {["Authorization"] = "Bearer " .. t} end
    reqs[k] = wrk.format("GET", m[1], headers)
  end
  n = #reqs
  i = (id * 997) % n
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end
""")
    if count_statuses:
        lines.append("""
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
""")
    lines.append("""
function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    if s then for code, c in pairs(s) do counts[code] = (counts[code] or 0) + c end end
  end
  local parts = {}
  for code, c in pairs(counts) do table.insert(parts, string.format('"%d": %d', code, c)) end
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "max_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "status": %d, '
    .. '"timeout": %d}, "statuses": {%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ", ")))
end
""")
    path.write_text("\n".join(lines))
    return path


def run_wrk(url: str, script: Path, threads=2, connections=32, duration="15s", timeout="5s") -> dict:
    wrk = shutil.which("wrk")
    if not wrk:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (.ci/run installs it)")
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}", f"--timeout={timeout}",
                          "-s", str(script), url], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            result = json.loads(line[len("WRKJSON "):])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    raise RuntimeError(f"wrk gave no result (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def access_log_statuses(log_path: Path) -> dict[int, int]:
    """Status counts from gunicorn's access log (format of sandbox/gunicorn_conf.py: `... "GET /p" 200 ...`)."""
    counts: dict[int, int] = {}
    with open(log_path, "rb") as f:
        for line in f:
            parts = line.split(b'" ', 1)
            if len(parts) == 2 and parts[0].count(b'"') == 1:
                code = parts[1][:3]
                if code.isdigit():
                    counts[int(code)] = counts.get(int(code), 0) + 1
    return counts


def cpu_seconds(pids) -> float:
    """user + system CPU time of these processes (all their threads), from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def measure(server: "Server", script: Path, args) -> dict:
    """A warm-up run, then the measured run of wrk, with the CPU the target's processes spent."""
    run_wrk(server.url, script, args.threads, args.connections, args.warmup)
    pids = server.tree()
    before = cpu_seconds(pids)
    result = run_wrk(server.url, script, args.threads, args.connections, args.duration)
    result["cpu_us_per_request"] = (cpu_seconds(pids) - before) / max(1, result["requests"]) * 1e6
    return result
