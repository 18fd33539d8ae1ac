"""What an operator monitors, in Prometheus' text format at /metrics (docs/public-instance.md).

Counted as they happen: calls by method, route (the spec's path template, or the Flask rule)
and status; refusals by reason (the error kind: invalid_token, rate_limited,
unsupported_media_type...); quota hits by quota; tokens minted. Read when scraped: the store's
use against its bound and the number of runtime personas.

gunicorn runs several worker processes: each keeps its counters in files of a folder shared by
the instance (prometheus-client's multiprocess mode) and a scrape, answered by any worker, adds
them up. The mode must be chosen before prometheus-client is first imported, and the folder must
be empty at start: `prepare_multiprocess()` makes a fresh folder of this instance's own in the
gunicorn master before the app is built (the workers inherit it through the fork), and removes
it when the master exits. An operator's own PROMETHEUS_MULTIPROC_DIR is used as it is (empty it
between starts). Outside gunicorn (the Flask test client), the counters live in the process.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def prepare_multiprocess():
    """In the gunicorn master, before the app is built (server.run, gunicorn_conf)."""
    if os.environ.get(MULTIPROC):
        return
    folder = tempfile.mkdtemp(prefix="particulier-sandbox-metrics-")
    os.environ[MULTIPROC] = folder
    master = os.getpid()
    atexit.register(lambda: os.getpid() == master and shutil.rmtree(folder, ignore_errors=True))


def worker_exited(pid: int):
    """gunicorn's child_exit: a dead worker's files for live gauges go (its counters stay counted)."""
    if os.environ.get(MULTIPROC):
        from prometheus_client import multiprocess
        multiprocess.mark_process_dead(pid)


def _quota(kind: str) -> str | None:
    """The quota an error kind names, if it is one: the rate limits, the body size, and the
    `*quota*` kinds of the journal and persona bounds."""
    if kind == "rate_limited":
        return "rate_limit"
    if kind == "payload_too_large":
        return "body_size"
    return kind if "quota" in kind else None


class Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter
        # never the registry a scrape reads in multiprocess mode (prometheus-client's docs: the
        # samples would be exported twice)
        self.registry = CollectorRegistry(auto_describe=True)
        self._calls = Counter("sandbox_calls", "Answered requests, by method, route and status",
                              ["method", "route", "status"], registry=self.registry)
        self._refusals = Counter("sandbox_refusals", "Requests refused, by reason (the error's kind)",
                                 ["reason"], registry=self.registry)
        self._quota_hits = Counter("sandbox_quota_hits", "Requests refused by a quota or a limit, by quota",
                                   ["quota"], registry=self.registry)
        self._minted = Counter("sandbox_tokens_minted", "Tokens minted by POST /sandbox/tokens",
                               registry=self.registry)
        self._sources = None
        self._children = {}  # (method, route, status) -> its counter; bounded by the routes and statuses

    def watch(self, store, personas):
        """What a scrape reads live: the store (its use and bound) and the runtime personas."""
        self._sources = (store, personas)

    def call(self, method: str, route: str, status) -> None:
        if method not in METHODS:  # a client names the method: any other word would be a new series
            method = "other"
        key = (method, route, status)
        child = self._children.get(key)  # on every call: labels() alone costs more than the increment
        if child is None:
            child = self._children[key] = self._calls.labels(method, route, str(status))
        child.inc()

    def refused(self, kind: str) -> None:
        self._refusals.labels(kind).inc()
        quota = _quota(kind)
        if quota:
            self._quota_hits.labels(quota).inc()

    def minted(self) -> None:
        self._minted.inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
        if os.environ.get(MULTIPROC):
            from prometheus_client import multiprocess
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_Counted(self.registry))
        if self._sources is not None:
            registry.register(_Live(*self._sources))
        return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


class _Counted:
    """This process's own counters, for a scrape outside multiprocess mode."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


class _Live:
    """Read at scrape time, by the scraping process: shared state, so no per-worker files."""

    def __init__(self, store, personas):
        self.store, self.personas = store, personas

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily
        used, bound = store_use(self.store)
        if used is not None:
            yield GaugeMetricFamily("sandbox_store_used_bytes", "Bytes the journals and runtime personas hold, "
                                    "as the store counts them for its bounds", value=used)
        if bound:
            yield GaugeMetricFamily("sandbox_store_bound_bytes", "The journals' and personas' bounds together "
                                    "(SANDBOX_JOURNAL_BYTES + SANDBOX_PERSONAS_BYTES)", value=bound)
        try:
            count = len(self.personas.current().cases)
        except Exception:  # the store down: the scrape still answers, without this gauge
            return
        yield GaugeMetricFamily("sandbox_runtime_personas", "Runtime personas in the store", value=count)


def store_use(store) -> tuple[int | None, int | None]:
    """(bytes the journals and personas hold, their bounds together) on either backend, as the
    store counts them for its quotas (GET /sandbox/usage); (None, None) when it is down."""
    try:
        use = store.usage("")
    except Exception:
        return None, None
    bounds = store.bounds
    return use["all_journal_bytes"] + use["all_persona_bytes"], bounds.journal_bytes + bounds.personas_bytes