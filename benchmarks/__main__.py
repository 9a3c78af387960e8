"""``python -m benchmarks``: run the workloads and print one table (see README.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from benchmarks import memory, peer, postgres, report, workloads


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="eskit's stores against plain sqlite3 / psycopg doing the same writes/reads.",
    )
    parser.add_argument("--only", help="comma-separated workloads to run, e.g. W1,W3")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; best is kept")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="run only the memory workload (a subscription and a projection catch-up over"
        " --memory-events events)",
    )
    parser.add_argument("--memory-events", type=int, default=1_000_000, metavar="N")
    parser.add_argument("--dir", type=Path, help="where temporary databases go (default: TMPDIR)")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="PostgreSQL server for the PG workloads (a database is created for the run and"
        " dropped at the end; default: $ESKIT_BENCH_POSTGRES or"
        f" {postgres.DEFAULT_SERVER})",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.memory_events < 1:
        parser.error("--memory-events must be at least 1")
    peers = tuple(w.name for w in peer.WORKLOADS)
    try:
        args.selected = workloads.select(args.only, also=peers)
    except ValueError as error:
        parser.error(str(error))
    wanted = {name.strip().lower() for name in (args.only or "").split(",")}
    args.peers = [w for w in peer.WORKLOADS if not args.only or w.name.lower() in wanted]
    return args


def main(argv: list[str] | None = None) -> None:
    """Run what the options ask for and print the results."""
    args = parse(argv)
    out = report.console()
    report.print_header(out)
    if args.memory:
        memory.run(args.memory_events, args.dir, out)
        return
    if args.postgres:
        postgres.configure(args.postgres)
    runnable, skipped = [], []
    for w in args.selected:
        reason = w.unavailable() if w.unavailable is not None else None
        if reason is None:
            runnable.append(w)
        else:
            skipped.append(f"{w.name} skipped: {reason}")
    peers = []
    for p in args.peers:
        reason = p.unavailable()
        if reason is None:
            peers.append(p)
        else:
            skipped.append(f"{p.name} skipped: {reason}")
    pg = any(w.backend == workloads.PG_BACKEND for w in runnable)
    if pg or any(p.backend == "postgres" for p in peers):
        out.print(f"[dim]{postgres.describe()}[/]", highlight=False)
    for line in skipped:
        out.print(f"[yellow]{escape(line)}[/]", highlight=False)

    def progress(line: str) -> None:
        out.print(f"[dim]{line}[/]")

    try:
        outcomes = [workloads.run(w, args.repeat, args.dir, progress) for w in runnable]
        peer_outcomes = [peer.run(p, args.repeat, args.dir, progress) for p in peers]
    finally:
        postgres.drop_database()
    if outcomes:
        report.print_results(outcomes, args.repeat, out)
    if peer_outcomes:
        report.print_peer_results(peer_outcomes, args.repeat, out)
    if outcomes or peer_outcomes:
        for line in skipped:  # again, below the tables
            out.print(f"[yellow]{escape(line)}[/]", highlight=False)


if __name__ == "__main__":
    main()
