"""`kempelen serve`'s process supervisor: starts the API, the submitter and the indexer, stops them by PID.

Each part is its own process so a slow chain or a long reconciliation never stalls the API,
and each can also run alone. If one dies the others are stopped and serve exits non-zero:
a service manager restarts the whole relay, and the submitter reconciles on its way up.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass

log = logging.getLogger("kempelen.relay.serve")


@dataclass
class Child:
    name: str
    command: list[str]
    process: subprocess.Popen | None = None


class Supervisor:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.children: list[Child] = []
        self._stopping = False

    def start(self, name: str, command: list[str]) -> Child:
        child = Child(name, command)
        # Same process group as serve: a SIGKILL of the group takes everything down at once,
        # and a terminal's Ctrl-C reaches every part.
        child.process = subprocess.Popen(command, env=self.env, stdin=subprocess.DEVNULL)
        self.children.append(child)
        log.info("started %s (pid %d)", name, child.process.pid)
        return child

    def _on_signal(self, signum, _frame) -> None:
        self._stopping = True

    def wait(self, poll: float = 0.2) -> int:
        """Block until SIGINT/SIGTERM (exit 0) or a child's death (exit 1); stop the rest."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        code = 0
        try:
            while not self._stopping:
                dead = next((c for c in self.children if c.process.poll() is not None), None)
                if dead is not None:
                    log.error("%s exited with code %d: stopping the relay", dead.name, dead.process.returncode)
                    code = 1
                    break
                time.sleep(poll)
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each live child by PID, then SIGKILL whatever is left after `timeout`."""
        live = [c for c in self.children if c.process.poll() is None]
        for child in live:
            try:
                os.kill(child.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for child in live:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs: killing pid %d", child.name, timeout, child.process.pid)
                os.kill(child.process.pid, signal.SIGKILL)
                child.process.wait()
