"""``eskit serve --grpc``: the HTTP API and KurrentDB's gRPC API in one process over one
store; what a KurrentDB client appends, the HTTP API reads."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from kurrentdbclient import KurrentDBClient, NewEvent, StreamState

from tests.kurrentdb.servers import ROOT
from tests.services import free_port

TIMEOUT = 30.0


def test_serve_with_grpc(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "eskit.cli", "serve", "--url", f"sqlite:///{tmp_path}/e.db"]
    command += ["--port", str(http_port), "--grpc", f"127.0.0.1:{grpc_port}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "200"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", grpc_port)) == 0:
                    break
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the gRPC server did not start"
            time.sleep(0.1)
        client = KurrentDBClient(f"kurrentdb://127.0.0.1:{grpc_port}?tls=false")
        stream = f"order-{uuid.uuid4().hex[:8]}"
        client.append_to_stream(
            stream,
            events=NewEvent(type="Placed", data=b'{"n":1}'),
            current_version=StreamState.NO_STREAM,
        )
        client.close()
        read = httpx.get(f"http://127.0.0.1:{http_port}/streams/{stream}", timeout=TIMEOUT)
        assert read.status_code == 200, read.text
        assert [(e["type"], e["data"]) for e in read.json()["events"]] == [("Placed", {"n": 1})]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=TIMEOUT)
        assert f"serving KurrentDB's gRPC API on 127.0.0.1:{grpc_port}" in output
        assert "Application shutdown complete" in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
