"""`serve --airtable-sync SECONDS`: every worker pulls periodically, one at a time, then reloads.

start_sync() is what the sandbox calls at start-up; it starts a daemon thread only when the flag
asked for it, so that pyairtable (imported by connect()) is never loaded otherwise. A file lock
in the data directory, stamped with the time of the last pull, keeps gunicorn's workers from
pulling together or twice per interval; a failed pull writes nothing, so the last good fixtures
keep serving, and each distinct failure is logged once.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from pathlib import Path

from .client import connect
from .common import SyncError, scrub
from .pull import pull

logger = logging.getLogger("sandbox.airtable")


class Syncer:
    """Each worker's thread: pull under a file lock (one worker at a time, once per interval),
    then reload. A failed pull writes nothing, so the last good set keeps serving; it is logged
    once per distinct failure."""

    def __init__(self, sandbox):
        self.sandbox = sandbox
        settings = sandbox.settings
        self.interval = float(settings.airtable_sync)
        self.base = settings.airtable_base
        self.target = Path(settings.fixtures[0])
        tag = hashlib.sha1(str(self.target.resolve()).encode()).hexdigest()[:12]
        self.lock_path = Path(settings.data_dir) / f"airtable-sync-{tag}.lock"
        self.last_error = None
        self.api = None

    def tick(self):
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is pulling
            lock.seek(0)
            try:
                stamp = float(lock.read().strip() or 0)
            except ValueError:
                stamp = 0.0
            if time.time() - stamp < self.interval * 0.5:
                return  # another worker pulled moments ago
            try:
                self.pull()
            finally:
                lock.seek(0)
                lock.truncate()
                lock.write(str(time.time()))

    def pull(self):
        try:
            self.api = self.api or connect()
            result = pull(self.base, self.target, self.sandbox.operations, api=self.api)
        except SyncError as exc:
            message = scrub(str(exc))
            if message != self.last_error:
                logger.error("airtable sync failed, still serving the last good fixtures: %s", message)
            self.last_error = message
            return
        if self.last_error:
            logger.warning("airtable sync works again")
        self.last_error = None
        if result.plans:
            logger.warning("airtable sync: %d file(s) changed: %s", len(result.changed), ", ".join(result.changed))

    def run(self):
        while True:
            try:
                self.tick()
                self.sandbox.population.reload_if_changed()  # every worker, also without a watcher
            except Exception as exc:  # a sync thread that dies silently would freeze the population
                logger.error("airtable sync crashed: %s", scrub(f"{type(exc).__name__}: {exc}"))
            time.sleep(self.interval)


def start_sync(sandbox):
    """Start the periodic pull in this worker when `serve --airtable-sync SECONDS` asked for it."""
    settings = sandbox.settings
    if not settings.airtable_sync or getattr(sandbox, "_airtable_sync", None):
        return
    if not settings.airtable_base or not os.environ.get("AIRTABLE_TOKEN"):
        logger.error("--airtable-sync needs AIRTABLE_BASE_ID and AIRTABLE_TOKEN; not syncing")
        sandbox._airtable_sync = True
        return
    syncer = Syncer(sandbox)
    sandbox._airtable_sync = threading.Thread(target=syncer.run, name="airtable-sync", daemon=True)
    sandbox._airtable_sync.start()
