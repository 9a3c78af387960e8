"""PostgreSQL high availability, as the rest of an application lives it, on a primary and a
standby of the test's own (``ha_cluster``): consumer groups acking through a kill-and-promote,
what an operator sees (``/health/ready`` and the admin pages) while no primary answers and
after the promotion, and lags measured against the primary's head when reads go to a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from examples.invoicing.web import app_spec

import eskit
from eskit.projections import ProjectionRunner
from eskit.subscriptions import Consumer, Groups, Settings, Source
from eskit.web import serving_app
from eskit.web.admin.repair import dashboard
from eskit.web.admin.site import Admin
from eskit.web.admin.subscriptions import summaries
from eskit.web.readiness import STORE_TIMEOUT, readiness
from tests.store.ha_cluster import Cluster
from tests.store.test_postgres_failover import Seen, replay, replicated  # noqa: F401
from tests.web.admin.client import PAGE, text
from tests.web.admin.client import Admin as Browser
from tests.web.api import client, token_file

pytestmark = pytest.mark.anyio


@pytest.fixture
def synchronous() -> Iterator[Cluster]:
    cluster = Cluster(synchronous=True).start()
    try:
        yield cluster
    finally:
        cluster.close()


# -- consumer groups ------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_consumer_group_resumes_on_the_new_primary_from_its_state(
    synchronous: Cluster, anyio_backend: str
) -> None:
    """A consumer acks (and parks every tenth event) while a writer appends; the primary is
    killed and the standby promoted meanwhile. The group's promise (docs/subscriptions.md):
    at least once, nothing acked handed out again, parked stays parked. So every event is
    acked or parked in the end, an event is handed out again only if its ack (or park) was
    lost, and the parked list is exactly what was parked."""
    async with eskit.open_store(synchronous.url()) as store:
        groups = Groups(store)
        await groups.create(
            "mails", Source.all(), settings=Settings(message_timeout=2.0, max_retries=100)
        )
        stop = asyncio.Event()
        written: dict[int, int] = {}  # position: n
        delivered: Counter[int] = Counter()
        acked: set[int] = set()  # the ack (or park) returned: it is the group's state
        parked: set[int] = set()
        lost: set[int] = set()  # the ack (or park) raised: its outcome is unknown
        again: list[int] = []  # handed out after its ack or park returned

        async def write() -> None:
            n = 0
            while not stop.is_set():
                result = await store.append(f"g-{n % 5}", [eskit.NewEvent("Wrote", {"n": n})])
                written[result.last_position] = n
                n += 1
                await asyncio.sleep(0.002)

        async def done() -> bool:
            found = await groups.get("mails")
            return found.checkpoint >= max(written) and found.in_flight == found.waiting == 0

        async def consume(consumer: Consumer) -> None:
            while True:
                try:
                    batch = await consumer.fetch(20)
                except eskit.StoreError:
                    continue
                if not batch:
                    if stop.is_set() and await done():
                        return
                    await asyncio.sleep(0.02)
                    continue
                for delivery in batch:
                    position = delivery.event.position
                    delivered[position] += 1
                    if position in acked:
                        again.append(position)
                    park = delivery.event.data["n"] % 10 == 0
                    try:
                        if park:
                            await delivery.nack("park", "every tenth")
                        else:
                            await delivery.ack()
                    except eskit.StoreError:
                        lost.add(position)
                        continue
                    acked.add(position)
                    if park:
                        parked.add(position)

        consumer = groups.consumer("mails", "c-1")
        writer = asyncio.create_task(write())
        consuming = asyncio.create_task(consume(consumer))
        await asyncio.sleep(2.0)
        await asyncio.to_thread(synchronous.kill)
        await asyncio.to_thread(synchronous.promote)
        await asyncio.sleep(2.0)
        stop.set()
        await writer
        async with asyncio.timeout(60):
            await consuming
        found = await groups.get("mails")
        listed = [p.position for p in await groups.parked("mails", after=0, limit=10_000)]
        head = await store.last_position()
        await consumer.close()
    print(
        f"\n{len(written)} events, {delivered.total()} deliveries, {len(lost)} acks lost,"
        f" {len(parked)} parked"
    )
    assert sorted(written) == list(range(1, head + 1))
    assert found.checkpoint == head  # none missed: every event acked or parked
    assert set(written) <= acked | lost
    assert again == []  # nothing acked (or parked) is handed out again
    redelivered = {position for position, count in delivered.items() if count > 1}
    assert redelivered <= lost  # at least once: again only after a lost ack
    assert sorted(listed) == [p for p, n in sorted(written.items()) if n % 10 == 0]
    assert len(listed) == len(set(listed))  # parked once, and it stays parked
    assert parked <= set(listed)


# -- what an operator sees -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(url: str, directory: Path) -> AsyncIterator[Browser]:
    """The invoicing application served as ``eskit serve`` builds it, on ``url``."""
    store = eskit.open_store(url)
    file, issued = token_file(directory)
    app = serving_app(store, app_spec(store), tokens=file)
    async with app.router.lifespan_context(app), client(app) as http:
        yield Browser(app, store, http, issued, file)


async def timed(http: httpx.AsyncClient, path: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.get(path, headers=PAGE)
    return response, time.monotonic() - started


@pytest.mark.slow
async def test_the_operator_pages_answer_during_a_failover_and_recover_after_it(
    synchronous: Cluster, tmp_path: Path, anyio_backend: str
) -> None:
    deadline = 3.0
    url = synchronous.url(failover_deadline=str(deadline))
    async with served(url, tmp_path) as admin:
        assert (await admin.login()).status_code == 303
        assert (await admin.http.get("/health/ready")).status_code == 200
        assert (await admin.http.get("/admin/projections", headers=PAGE)).status_code == 200
        await asyncio.to_thread(synchronous.kill)  # nobody promotes the standby for now

        ready, took = await timed(admin.http, "/health/ready")
        assert ready.status_code == 503
        assert took < STORE_TIMEOUT + 1  # never beyond its own 2 s
        assert ready.json()["reasons"][0] in (
            "the store did not answer within 2 s",
            "the store is not reachable (StoreUnavailable)",
        )
        assert ready.headers["Retry-After"] == "1"
        assert (await admin.http.get("/health/live")).status_code == 200

        page, took_page = await timed(admin.http, "/admin/projections")
        shown = text(page.text)
        print(f"\noutage: /health/ready 503 in {took:.2f} s, the admin page in {took_page:.2f} s")
        print(shown)
        assert page.status_code == 503
        assert "PostgreSQL read failed" in shown
        assert took_page < deadline + 1.5  # its last attempt ends at the deadline
        groups_page, took_page = await timed(admin.http, "/admin/subscriptions")
        assert groups_page.status_code == 503
        assert took_page < deadline + 1.5

        await asyncio.to_thread(synchronous.promote)
        promoted = time.monotonic()
        async with asyncio.timeout(deadline + 10):  # healthy again, without a restart
            while (await admin.http.get("/health/ready")).status_code != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        again = time.monotonic() - promoted
        print(f"ready again {again:.2f} s after the promotion")
        assert again < 2.5  # the pool looks for the new primary at least every second
        assert (await admin.http.get("/admin/projections", headers=PAGE)).status_code == 200
        assert (await admin.http.get("/admin/subscriptions", headers=PAGE)).status_code == 200


# -- lags against the primary's head -------------------------------------------------------


async def test_with_a_replica_lags_are_measured_against_the_primarys_head(
    replicated: tuple[Cluster, eskit.EventStore],  # noqa: F811 (the imported fixture)
) -> None:
    cluster, store = replicated
    first = await store.append("l-1", [eskit.NewEvent("Wrote", {"n": 0})])
    await asyncio.to_thread(cluster.wait_replayed)
    groups = Groups(store)
    await groups.create("lagging", Source.all())
    async with ProjectionRunner(store, [Seen()]) as runner:
        async with asyncio.timeout(10):
            await runner.wait_until(first.last_position)
        await asyncio.to_thread(replay, cluster, True)
        try:
            for n in range(1, 4):
                last = await store.append("l-1", [eskit.NewEvent("Wrote", {"n": n})])
            assert await store.last_position() == first.last_position  # the replica's
            answer = await readiness(store, runner, max_lag=2)
            assert answer.head == last.last_position
            assert answer.lag == {"seen": 3}
            assert answer.status == "unready"
            head, rows = await dashboard(store, runner, None)  # the projections page
            assert head == last.last_position
            assert {row.name: row.lag for row in rows} == {"seen": 3}
            admin = Admin(store, None, runner, {}, None, own_database=False)
            listed = await summaries(admin)  # the subscriptions page
            assert listed is not None
            assert [entry["lag"] for entry in listed] == [last.last_position]
        finally:
            await asyncio.to_thread(replay, cluster, False)
