"""Who may do what: 401 without a valid token and 403 without the scope, on every kind of
endpoint; scopes limited to a category; revocation without a restart; only hashes on disk;
no token and no payload in the logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eskit
from eskit.web import create_app, tokens
from eskit.web.errors import ApiError
from eskit.web.inputs import parse_expected_version
from eskit.web.tokens import Grant, TokenFile, check_scope
from tests.web.api import Api, bearer, client, error, token_file

pytestmark = pytest.mark.anyio

CREATE = {"invoice_id": "1", "customer_id": "c", "currency": "EUR", "due_date": "2024-05-31"}
REGISTER = {"customer_id": "c-1", "name": "Ann", "email": "ann@example.com"}
EVENTS = {"events": [{"type": "T", "data": {}}]}
ENDPOINTS: list[tuple[str, str, Any, str]] = [
    ("POST", "/commands/CreateInvoice", CREATE, "write"),
    ("GET", "/queries/last_position", None, "read"),
    ("GET", "/streams/invoice-1", None, "read"),
    ("POST", "/streams/invoice-1", EVENTS, "write"),
    ("GET", "/events", None, "read"),
    ("GET", "/events/live", None, "read"),
]
"""Every kind of endpoint, with what it needs."""


async def call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> int:
    response = await api.http.request(method, path, json=body, headers=headers)
    if response.status_code in (401, 403):
        assert error(response)["type"] in ("Unauthorized", "Forbidden")
    if response.status_code == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return response.status_code


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS)
async def test_every_endpoint_needs_a_valid_token(
    api: Api, method: str, path: str, body: Any, needs: str
) -> None:
    for headers in (
        {},
        bearer("eskit_not-a-token"),
        {"Authorization": f"Basic {api.tokens['admin']}"},
        {"Authorization": "Bearer "},
    ):
        assert await call(api, method, path, body, headers) == 401, headers


@pytest.mark.parametrize(("method", "path", "body", "needs"), ENDPOINTS)
async def test_every_endpoint_needs_its_scope(
    api: Api, method: str, path: str, body: Any, needs: str
) -> None:
    lacking = "writer" if needs == "read" else "reader"
    assert await call(api, method, path, body, api.as_(lacking)) == 403
    if path != "/events/live":  # a granted live feed never ends: see test_live
        for allowed in ("admin", "reader" if needs == "read" else "writer"):
            assert await call(api, method, path, body, api.as_(allowed)) not in (401, 403)


@pytest.mark.parametrize(
    ("token", "method", "path", "body", "status"),
    [
        ("invoice_writer", "POST", "/commands/CreateInvoice", CREATE, 200),
        ("invoice_writer", "POST", "/commands/RegisterCustomer", REGISTER, 403),
        ("invoice_writer", "POST", "/streams/invoice-9", EVENTS, 201),
        ("invoice_writer", "POST", "/streams/customer-9", EVENTS, 403),
        ("invoice_writer", "GET", "/streams/invoice-9", None, 403),
        ("invoice_reader", "GET", "/streams/invoice-9", None, 200),
        ("invoice_reader", "GET", "/streams/customer-9", None, 403),
        ("invoice_reader", "GET", "/events?category=invoice", None, 200),
        ("invoice_reader", "GET", "/events", None, 403),
        ("invoice_reader", "GET", "/events?category=customer", None, 403),
        ("invoice_reader", "GET", "/events/live?category=customer", None, 403),
        ("invoice_reader", "GET", "/queries/last_position", None, 403),
        ("invoice_reader", "POST", "/streams/invoice-9", EVENTS, 403),
    ],
)
async def test_a_scope_limited_to_a_category_allows_that_category_only(
    api: Api, token: str, method: str, path: str, body: Any, status: int
) -> None:
    assert await call(api, method, path, body, api.as_(token)) == status


async def test_a_forbidden_command_writes_nothing_and_says_why(api: Api) -> None:
    response = await api.command("RegisterCustomer", REGISTER, token="invoice_writer")
    assert error(response)["message"] == (
        "token 'invoice_writer' may not write on category 'customer': it may write only invoice"
    )
    assert await api.store.last_position() == 0


async def test_a_revoked_token_is_refused_without_a_restart(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "RELOAD_EVERY", 0.0)
    headers = api.as_("reader")
    assert (await api.http.get("/events", headers=headers)).status_code == 200
    TokenFile(tmp_path / "tokens.json").revoke("reader")
    refused = await api.http.get("/events", headers=headers)
    assert refused.status_code == 401
    assert error(refused)["message"] == "the token is not valid (unknown or revoked)"
    late = TokenFile(tmp_path / "tokens.json").create("late", ["read"])
    assert (await api.http.get("/events", headers=bearer(late))).status_code == 200


async def test_the_token_file_holds_hashes_only(api: Api, tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    text = path.read_text()
    assert all(token not in text for token in api.tokens.values())
    records = json.loads(text)["tokens"]
    assert {r["name"]: r["scopes"] for r in records}["invoice_writer"] == ["write:invoice"]
    assert path.stat().st_mode & 0o077 == 0


def test_token_names_and_scopes_are_checked(tmp_path: Path) -> None:
    file = TokenFile(tmp_path / "tokens.json")
    file.create("ci", ["read"])
    for name, scopes, says in [
        ("ci", ["read"], "already exists"),
        ("other", [], "at least one scope"),
        ("other", ["delete"], "must start with read, write or admin"),
        ("other", ["admin:invoice"], "admin covers every category"),
        ("other", ["write:invoice-1"], "the part of a stream name before '-'"),
        ("other", ["read:"], "is missing"),
        ("", ["read"], "must not be empty"),
    ]:
        with pytest.raises(ValueError, match=says):
            file.create(name, scopes)
    with pytest.raises(ValueError, match="no token named 'nobody'"):
        file.revoke("nobody")
    assert [r.name for r in file.read()] == ["ci"]


@given(st.text(max_size=30))
def test_any_scope_text_is_accepted_or_refused_clearly(scope: str) -> None:
    try:
        checked = check_scope(scope)
    except ValueError:
        return
    action, _, category = checked.partition(":")
    grant = Grant("t", [checked])
    assert grant.allows(action if action != "admin" else "write", category or None)  # type: ignore[arg-type]


@given(st.text(max_size=30))
def test_any_expected_version_header_is_understood_or_a_400(header: str) -> None:
    try:
        parse_expected_version(header)
    except ApiError as refused:
        status = refused.status
    else:
        return
    assert status == 400


async def test_no_token_and_no_payload_reaches_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "s3cr3t-payload"

    def boom(note: str) -> int:
        raise RuntimeError(f"failed on {note}")

    file, issued = token_file(tmp_path)
    caplog.set_level(logging.DEBUG)
    async with eskit.open_store(f"sqlite:///{tmp_path}/events.db") as store:
        app = create_app(store, queries={"boom": boom}, tokens=file)
        async with client(app) as http:
            admin = bearer(issued["admin"])
            assert (
                await http.get("/queries/boom", params={"note": secret}, headers=admin)
            ).status_code == 500
            await http.get("/events", headers=bearer(issued["admin"] + secret))
            as_json = {**admin, "Content-Type": "application/json"}
            await http.post("/streams/invoice-1", content=secret.encode(), headers=as_json)
            await http.post(
                "/streams/$x", json={"events": [{"type": secret, "data": {}}]}, headers=admin
            )
            await http.post(
                "/streams/invoice-1",
                json={"events": [{"type": "T", "data": {"k": secret}}]},
                headers=admin,
            )
    server_side = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records if r.name != "httpx"
    )  # the test's client logs its own URLs
    assert "unexpected RuntimeError" in server_side
    assert secret not in server_side
    for token in issued.values():
        assert token not in server_side
