"""What both store backends share: the unavailable error, a counted hit, health logging."""
from __future__ import annotations

import logging
import os
import weakref
from typing import NamedTuple

logger = logging.getLogger("sandbox.store")


class StoreUnavailable(Exception):
    """The shared store cannot be reached: the request is answered 503, never unlimited."""


class Hit(NamedTuple):
    """One counted call in one fixed window."""
    count: int    # calls in this window, this one included
    reset: int    # epoch second at which the window ends (RateLimit-Reset)
    now: float    # the counting clock at that moment, for Retry-After


class Health:
    """Logs a store going down and coming back once each, not once per request."""

    def __init__(self, name: str):
        self.name = name
        self.down = False

    def failed(self, exc):
        if not self.down:
            self.down = True
            logger.warning("%s unreachable, API calls answer 503 until it is back: %s", self.name, exc)

    def ok(self):
        if self.down:
            self.down = False
            logger.warning("%s reachable again", self.name)


def after_fork(obj, method):
    """Call method(obj) in every forked child while obj lives (os.register_at_fork, weakly)."""
    ref = weakref.ref(obj)

    def in_child():
        target = ref()
        if target is not None:
            method(target)
    os.register_at_fork(after_in_child=in_child)
