"""The population being served: each process's current FixtureSet, swapped whole when the
case folders change (watched with watchdog), keyed anew when production's day turns.
"""
from __future__ import annotations

import datetime
import threading
from pathlib import Path

from ..production import clock
from .files import shown_path, signature
from .fixtures import FixtureSet, load


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class Population:
    """The fixture set being served, swapped whole when the files change.

    Each process that serves (a gunicorn worker) watches the case folders in a thread of its
    own: the kernel's change notifications (watchdog; inotify on Linux) wake it at once, and it
    then compares the files' signature (one stat per file) with the one it serves. Change
    notifications may not come from some filesystems (a VM's shared folder, NFS), so the
    signature is also compared every `SAFETY_POLLS` intervals (every interval when the folders
    cannot be watched). A reload that finds a fatal problem keeps the last good set serving, and
    says why.
    """

    SAFETY_POLLS = 10

    def __init__(self, dirs, operations: dict, reload_interval: float, logger):
        self.dirs = [Path(d) for d in dirs]
        self.operations = operations
        self.reload_interval = reload_interval
        self.logger = logger
        self._current = load(self.dirs, operations)
        self._swap = threading.Lock()
        self.loaded_at = _now()       # when the served set was read
        self.last_reload = None       # {"at", "served", "problems"} of the last reload tried, None before one
        self.stale = ()               # the fatal problems of the files on disk while they are not served
        self._thread = None

    @property
    def current(self) -> FixtureSet:
        """The set being served, keyed on production's today: a set whose params hold relative
        dates is keyed anew on the first call of a new day (FixtureSet.on, in memory)."""
        current = self._current
        if current.dated_params:
            day = clock.today()
            if day != current.day:
                keyed = current.on(day)
                with self._swap:  # a reload that swapped the set meanwhile wins
                    if self._current is current:
                        self._current = keyed
                return keyed
        return current

    @current.setter
    def current(self, fixtures: FixtureSet):
        with self._swap:
            self._current = fixtures

    def france_connect(self, token: str):
        return self.current.france_connect.get(token)

    def reload_if_changed(self) -> bool:
        if signature(self.dirs) == self.current.signature:
            return False
        candidate = load(self.dirs, self.operations)
        if candidate.fatal:
            self.logger.error("fixtures changed but are broken; still serving the last good set:\n  %s",
                              "\n  ".join(map(str, candidate.fatal)))
            self._current.signature = candidate.signature  # report a broken edit once, not every second
            # said on every answer until an edit fixes it (X-Sandbox-Fixtures-Stale, /sandbox/status)
            self.stale = tuple(candidate.fatal)
            self.last_reload = {"at": _now(), "served": False, "problems": [str(p) for p in candidate.fatal]}
            return False
        problems = candidate.check()
        for problem in problems:  # in the watcher thread: every payload checked, and said
            self.logger.warning("fixture problem: %s", problem)
        self.current, self.stale, self.loaded_at = candidate, (), _now()
        self.last_reload = {"at": self.loaded_at, "served": True, "problems": [str(p) for p in problems]}
        self.logger.info("fixtures reloaded: %d cases", sum(len(c) for c in candidate.ordered.values()))
        return True

    def status(self) -> dict:
        """The served set, the last reload and its problems (GET /sandbox/status). This process's
        view: each worker reloads on its own, within a second of the others."""
        served = self.current
        return {"folders": [shown_path(d) for d in self.dirs],
                "served": {"loaded_at": self.loaded_at,
                           "operations": len(served.ordered),
                           "cases": sum(len(cases) for cases in served.ordered.values()),
                           "france_connect_tokens": len(served.france_connect),
                           "problems": [str(p) for p in served.problems]},
                "up_to_date": not self.stale,
                "stale": [str(p) for p in self.stale],
                "last_reload": self.last_reload,
                "hot_reload": bool(self.reload_interval)}

    def start_watching(self):
        if self._thread is not None or not self.reload_interval:
            return
        self._stop, self._changed = threading.Event(), threading.Event()
        self._observer = None
        self._thread = threading.Thread(target=self._watch, name="fixture-watcher", daemon=True)
        self._thread.start()

    def _observe(self):
        """A watchdog observer that sets `_changed` on any change under the folders; None when
        they cannot be watched (a folder missing, the system's inotify limits reached)."""
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        changed = self._changed

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                if event.event_type != "opened" and event.event_type != "closed_no_write":
                    changed.set()

        observer = Observer()
        try:
            for root in self.dirs:
                observer.schedule(Handler(), str(root), recursive=True)
            observer.start()
        except OSError as exc:
            self.logger.info("fixture folders not watched (%s): their files are compared every %ss",
                             exc, self.reload_interval)
            return None
        return observer

    def stop_watching(self):
        """The watcher ends at once (a test's population, not a worker's, which lives on)."""
        if self._thread is not None:
            self._stop.set()
            self._changed.set()
            self._thread.join()
            self._thread = None
            if self._observer is not None:
                self._observer.stop()
                self._observer.join()

    def _watch(self):
        # Set up here, not in start_watching: a worker answers its first call without waiting for
        # watchdog's import and its watches. An edit made meanwhile is seen by the first compare.
        self._observer = self._observe()
        self._changed.set()
        interval = self.reload_interval * (self.SAFETY_POLLS if self._observer is not None else 1)
        while not self._stop.is_set():
            if self._changed.wait(interval):
                self._stop.wait(self.reload_interval)  # an editor's save is several events: one reload
            self._changed.clear()
            if self._stop.is_set():
                break
            try:
                self.reload_if_changed()
            except Exception:  # a watcher that dies silently would freeze the population
                self.logger.exception("fixture reload failed")
