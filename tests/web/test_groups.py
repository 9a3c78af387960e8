"""Consumer groups over HTTP: read a batch, ack or nack by id, behind tokens and scopes."""

from __future__ import annotations

import pytest

from eskit.subscriptions import EventFilter, Groups, Settings, Source
from tests.web.api import Api, error

pytestmark = pytest.mark.anyio


async def test_http_consumer_reads_a_batch_then_acks_and_nacks_by_id(any_api: Api) -> None:
    await any_api.append("invoice-1", "Due", "Due", "Due")
    groups = Groups(any_api.store)
    await groups.create("mail", Source.category("invoice"), settings=Settings(max_retries=0))
    read = await any_api.http.post(
        "/subscriptions/mail/read",
        params={"consumer": "php-1", "limit": 10},
        headers=any_api.as_("invoice_reader"),
    )
    assert read.status_code == 200, read.text
    messages = read.json()["messages"]
    assert [(m["event"]["version"], m["attempt"], m["replayed"]) for m in messages] == [
        (0, 1, False),
        (1, 1, False),
        (2, 1, False),
    ]
    ids = [m["event"]["id"] for m in messages]
    acked = await any_api.http.post(
        "/subscriptions/mail/ack", json={"ids": ids[:2]}, headers=any_api.as_("invoice_reader")
    )
    assert acked.json() == {"count": 2}
    nacked = await any_api.http.post(
        "/subscriptions/mail/nack",
        json={"consumer": "php-1", "ids": ids[2:], "action": "park", "reason": "bad"},
        headers=any_api.as_("reader"),
    )
    assert nacked.json() == {"count": 1}
    shown = (await any_api.http.get("/subscriptions/mail", headers=any_api.as_("reader"))).json()
    assert (shown["checkpoint"], shown["parked"], shown["source"]) == (3, 1, "$ce-invoice")
    assert shown["consumers"] == ["php-1"]
    assert shown["filter"] is None
    by_stream = EventFilter("stream", regex="^invoice-[0-9]+$")
    await groups.create("strict", Source.category("invoice").filtered(by_stream))
    strict = await any_api.http.get("/subscriptions/strict", headers=any_api.as_("reader"))
    assert strict.json()["filter"] == "stream regex '^invoice-[0-9]+$'"
    (parked,) = await groups.parked("mail")
    assert (parked.reason, parked.event_id) == ("bad", ids[2])


async def test_http_groups_are_scoped_by_category(api: Api) -> None:
    groups = Groups(api.store)
    await groups.create("mail", Source.category("invoice"))
    await groups.create("crm", Source.category("customer"))
    await groups.create("audit", Source.all())

    async def listed(token: str) -> list[str]:
        reply = await api.http.get("/subscriptions", headers=api.as_(token))
        return [g["name"] for g in reply.json()["groups"]]

    assert await listed("reader") == ["audit", "crm", "mail"]
    assert await listed("invoice_reader") == ["mail"]
    refused = await api.http.post(
        "/subscriptions/crm/read", params={"consumer": "x"}, headers=api.as_("invoice_reader")
    )
    assert refused.status_code == 403
    assert "read only invoice" in error(refused)["message"]
    assert (await api.http.get("/subscriptions", headers=api.as_("writer"))).status_code == 403
    missing = await api.http.post(
        "/subscriptions/nope/read", params={"consumer": "x"}, headers=api.as_("reader")
    )
    assert missing.status_code == 404
    assert (await api.http.get("/subscriptions")).status_code == 401
