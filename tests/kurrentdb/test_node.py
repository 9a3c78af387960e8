"""The official KurrentDB Node.js client (``@kurrent/kurrentdb-client`` from npm, run by the
machine's Node.js) against ``eskit grpc`` on SQLite and PostgreSQL: appends with expected
states, reads forwards and backwards (of a stream and of ``$all``), a catch-up subscription
that catches up and goes live, and a persistent subscription with acks
(``node/clients.mjs``).

The client is installed by ``npm ci`` from ``node/package-lock.json`` into
``node/node_modules`` the first time (again when the lock file changes). Without Node.js or
npm the test is skipped, and fails under ``CI=true``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.kurrentdb.servers import GrpcProcess
from tests.services import unavailable

NODE = Path(__file__).parent / "node"
INSTALLED = NODE / "node_modules" / ".package-lock.json"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The folder where ``node clients.mjs`` finds the client (installed if it is not)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable("Node.js and npm are needed for the Node.js client test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        unavailable(f"the KurrentDB Node.js client needs Node.js 20+, not {version.stdout}")
    lock = NODE / "package-lock.json"
    if not INSTALLED.exists() or INSTALLED.stat().st_mtime < lock.stat().st_mtime:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            unavailable(f"npm ci failed: {done.stderr[-2000:]}")
    return NODE


@pytest.mark.slow
def test_the_nodejs_client(node_client: Path, server: GrpcProcess) -> None:
    stream = f"order-{uuid.uuid4().hex[:12]}"
    done = subprocess.run(
        ["node", "clients.mjs", f"kurrentdb://{server.address}?tls=false", stream],
        cwd=node_client,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["appended"] == 1  # next expected revision after two events
    assert seen["wrongVersion"] == "1"  # the actual revision, from a no-stream append
    assert seen["forwards"] == [["Opened", 1, 0], ["Changed", 2, 1], ["Changed", 3, 2]]
    assert seen["backwards"] == ["Changed", "Changed"]
    assert seen["allBackwards"] == [stream] * 3  # the newest events of $all are ours
    assert seen["subscribed"] == ["Opened", "Changed", "Changed", "Live"]
    assert seen["persistent"] == [["Opened", 0], ["Changed", 0], ["Changed", 0], ["Live", 0]]
    assert seen["groupInfo"] == [f"node-{stream}", stream]
