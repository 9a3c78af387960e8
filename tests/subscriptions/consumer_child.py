"""A consumer of a group in a process of its own (blocking face), for the process tests.

``run URL GROUP NAME OUT TARGET``: handle events, appending each event id to OUT, until
the group's checkpoint reaches TARGET. ``hold URL GROUP NAME COUNT``: take COUNT events,
print their positions, and wait to be killed.
"""

from __future__ import annotations

import sys
import time

import eskit.sync
from eskit.store.model import RecordedEvent


def main(mode: str, url: str, group: str, name: str, *rest: str) -> None:
    with eskit.sync.open_store(url) as store:
        groups = eskit.sync.Groups(store)
        consumer = groups.consumer(group, name, poll=0.02)
        if mode == "hold":
            held = consumer.fetch(int(rest[0]))
            print(" ".join(str(d.event.position) for d in held), flush=True)
            time.sleep(600)
            return
        out, target = open(rest[0], "a"), int(rest[1])  # noqa: SIM115

        def handler(event: RecordedEvent) -> None:
            out.write(f"{event.id}\n")
            out.flush()

        deadline = time.monotonic() + 120
        while groups.get(group).checkpoint < target and time.monotonic() < deadline:
            if not consumer.run(handler, until_idle=True):
                time.sleep(0.02)
        consumer.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
