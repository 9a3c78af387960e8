"""``eskit subscriptions``: create, list, update, parked, replay (with who asked), delete."""

from __future__ import annotations

import asyncio
import json

import eskit
from eskit.subscriptions import EventFilter, Groups, Source
from tests.cli.conftest import invoke


async def park_first_two(url: str) -> None:
    async with eskit.open_store(url) as store:
        consumer = Groups(store).consumer("mail", "worker")
        first, second, *rest = await consumer.fetch()
        await consumer.nack([first, second], "park", "no address")
        await consumer.ack(rest)


def test_subscriptions_commands(url: str) -> None:
    created = invoke(
        ["subscriptions", "create", url, "mail", "--source", "$ce-invoice", "--max-retries", "2"]
    )
    assert created.exit_code == 0, created.output
    assert "created group mail over $ce-invoice from 0" in created.output
    again = invoke(["subscriptions", "create", url, "mail"])
    assert again.exit_code == 1
    assert "exists already" in again.output
    assert invoke(["subscriptions", "update", url, "mail", "--strategy", "pinned"]).exit_code == 0
    asyncio.run(park_first_two(url))
    (listed,) = [
        json.loads(line)
        for line in invoke(["subscriptions", "list", url, "--json"]).output.splitlines()
    ]
    assert (listed["name"], listed["source"], listed["strategy"], listed["parked"]) == (
        "mail",
        "$ce-invoice",
        "pinned",
        2,
    )
    assert (listed["checkpoint"], listed["lag"]) == (5, 0)
    table = invoke(["subscriptions", "parked", url, "mail"]).output
    assert "no address" in table
    assert "invoice-1" in table
    parked = [
        json.loads(line)
        for line in invoke(["subscriptions", "parked", url, "mail", "--json"]).output.splitlines()
    ]
    assert [(p["seq"], p["position"]) for p in parked] == [(1, 1), (2, 2)]
    replayed = invoke(["subscriptions", "replay", url, "mail", "--up-to", "1", "--by", "ann"])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 parked events of mail (replay 1)" in replayed.output
    (record,) = [
        json.loads(line)
        for line in invoke(["subscriptions", "replays", url, "mail", "--json"]).output.splitlines()
    ]
    assert (record["requested_by"], record["replayed"], record["up_to"]) == ("ann", 1, 1)
    assert invoke(["subscriptions", "delete", url, "mail"]).exit_code == 0
    assert invoke(["subscriptions", "list", url, "--json"]).output == ""


def test_a_group_filter_is_listed(url: str) -> None:
    async def create() -> None:
        async with eskit.open_store(url) as store:
            paid = Source.all(EventFilter("type", ("Paid", "Refunded")))
            await Groups(store).create("payments", paid)
            await Groups(store).create("everything", Source.all())

    asyncio.run(create())
    listed = [
        json.loads(line)
        for line in invoke(["subscriptions", "list", url, "--json"]).output.splitlines()
    ]
    assert [(g["name"], g["source"], g["filter"]) for g in listed] == [
        ("everything", "$all", ""),
        ("payments", "$all", "event type prefix 'Paid', 'Refunded'"),
    ]
    table = invoke(["subscriptions", "list", url]).output
    assert "Refunded" in table
    missing = invoke(["subscriptions", "parked", url, "mail"])
    assert missing.exit_code == 1
    assert "no consumer group named 'mail'" in missing.output


def test_create_takes_a_filter_and_refuses_a_bad_one(url: str) -> None:
    paid = ["--filter-by", "type", "--prefix", "Paid", "--prefix", "Refunded"]
    created = invoke(["subscriptions", "create", url, "payments", *paid])
    assert created.exit_code == 0, created.output
    assert "over $all (event type prefix 'Paid', 'Refunded') from 0" in created.output
    big = ["--source", "$ce-order", "--filter-by", "stream", "--regex", "^order-big-"]
    regex = invoke(["subscriptions", "create", url, "big", *big])
    assert regex.exit_code == 0, regex.output
    lines = invoke(["subscriptions", "list", url, "--json"]).output.splitlines()
    listed = {g["name"]: g["filter"] for g in map(json.loads, lines)}
    assert listed == {
        "big": "stream regex '^order-big-'",
        "payments": "event type prefix 'Paid', 'Refunded'",
    }
    for bad, says in (
        (["--prefix", "Paid"], "give --filter-by stream or type"),
        (["--filter-by", "colour"], "a filter is by 'stream' or 'type'"),
        (["--filter-by", "type", "--regex", "("], "is not valid"),
    ):
        refused = invoke(["subscriptions", "create", url, "bad", *bad])
        assert refused.exit_code == 2, refused.output
        assert says in refused.output
    assert "bad" not in invoke(["subscriptions", "list", url, "--json"]).output
