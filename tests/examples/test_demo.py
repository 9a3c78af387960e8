"""`make demo`'s invoicing part runs to the end, quickly, and shows what it promises."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_invoicing_demo_runs_and_shows_each_step() -> None:
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "examples.invoicing.demo"],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started

    assert run.returncode == 0, run.stderr
    out = run.stdout
    expected = [
        "customer-ada at version 0, and email-ada@example.com at version 0",
        "order-1001",  # the correlation id, in the events table
        "second send: replayed=True",
        "InvoicePaid events in the stream: 1",
        "✗ PayInvoice refused: a cancelled invoice cannot be paid",
        "the bus retried",
        "no line was lost",
        "snapshot at version 99",
        "only the tail: 31 events",
        "(the same)",
        "✗ RegisterCustomer refused: the e-mail address ada@example.com is already used",
        "customer-ada-2 has 0 events",
        # the read side
        "'lamp'         → 2 hits",
        "no syntax error",
        "Jun 01, the day after the due date: tick → PaymentReminderSent to invoice-inv-4",
        "Jun 02, a day later: tick → nothing sent",
        "Jun 14, 14 days past due: tick → InvoiceMarkedOverdue to invoice-inv-4",
        "inv-4 is now overdue in the invoice list",
        "during the rebuild; they saw [5007]",  # readers never saw the list empty or partial
        "✓ digests equal",
    ]
    missing = [line for line in expected if line not in out]
    assert not missing, f"missing {missing} in:\n{out}"
    time_travel = [  # as of, version, status, total, paid
        r"now\s+4\s+paid\s+€32\.50\s+€32\.50",
        r"version=1\s+1\s+draft\s+€30\.00\s+€0\.00",
        r"at=May 02 12:00\s+3\s+issued\s+€32\.50\s+€0\.00",
    ]
    for row in time_travel:
        assert re.search(row, out), f"no time-travel row {row!r} in:\n{out}"
    read_models = [
        r"inv-4\s+grace\s+May 31\s+issued\s+€925\.00\s+€0\.00",  # the invoice list
        r"grace\s+EUR\s+2\s+€937\.00",  # a customer's balance
        r"rebuilding invoice_list .* 25160/25160",
        r"invoice_list\s+1\s+25160\s+0\s+running",  # the runner's status after the rebuild
    ]
    for row in read_models:
        assert re.search(row, out), f"no read-model row {row!r} in:\n{out}"
    assert "Traceback" not in out + run.stderr
    assert elapsed < 20, f"the demo took {elapsed:.1f} s"
