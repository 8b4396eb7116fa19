"""Polling for tests that drive the local stack's background processes."""

from __future__ import annotations

import time


def wait_for(condition, timeout=30.0):
    """condition()'s first truthy value, polled every 0.2 s; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value
