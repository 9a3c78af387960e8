"""eskit benchmarks: each workload on eskit's SQLite store and on plain sqlite3 (the ceiling).

Run with ``python -m benchmarks`` (``--help`` for options); see benchmarks/README.md.
"""
