"""The invoicing example on the blocking face runs to the end and shows what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_blocking_invoicing_demo_runs_and_shows_each_step() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "examples.invoicing.sync_demo"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert run.returncode == 0, run.stderr
    out = run.stdout
    expected = [
        "customer-ada at version 0, email-ada@example.com at version 0",
        "inv-1 issued at version 2, total €30.00",
        "second send: replayed=True, same position True",
        "InvoicePaid events in the stream: 1",
        "now: version 3, paid, €30.00",
        "v1: version 1, draft, €30.00",
        "✗ PayInvoice refused: a cancelled invoice cannot be paid",
        "versions [1, 2, 3, 4, 5, 6, 7, 8]",
        "total €8.00: no line was lost",
        "snapshot at version 99; loaded at version 130",
        "✗ RegisterCustomer refused: the e-mail address ada@example.com is already used",
    ]
    missing = [line for line in expected if line not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    assert re.search(r"conflicts retried: \d+", out)
    assert "Traceback" not in out + run.stderr
