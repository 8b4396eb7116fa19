"""`kempelen up` as a person runs it: the whole stack comes up, answers, and Ctrl-C stops all of it."""

import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from kempelen.chain.anvil import free_port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_the_stack_and_ctrl_c_stops_everything(tmp_path):
    chain_port, relay_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kempelen.cli", "up", "--chain-port", str(chain_port),
         "--relay-port", str(relay_port), "--home", str(tmp_path / "local")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
        start_new_session=True)
    lines = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"kempelen up exited early: {''.join(lines)}"
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        output = "".join(lines)
        assert f"http://127.0.0.1:{relay_port}" in output and "TaskEscrow" in output
        health = httpx.get(f"http://127.0.0.1:{relay_port}/health", timeout=5).json()
        assert health["status"] == "ok" and health["chain_id"] == 31337
        assert port_open(chain_port)
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 0 and "stopped" in rest and "Traceback" not in rest
    assert not port_open(chain_port) and not port_open(relay_port)
