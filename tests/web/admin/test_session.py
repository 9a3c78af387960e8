"""Who may use the admin UI: an admin token, through the login form (an HttpOnly cookie only
``/admin`` receives) or a bearer header; forms that change something need the page's CSRF
token and must come from this site."""

from __future__ import annotations

import pytest

from tests.web.admin.client import PAGE, Admin

pytestmark = pytest.mark.anyio


async def test_a_page_without_login_leads_to_the_login_form(admin: Admin) -> None:
    response = await admin.http.get("/admin/projections", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login?next=%2Fadmin%2Fprojections"
    form = await admin.page("/admin/login", next="/admin/projections")
    assert 'type="password"' in form
    assert 'value="/admin/projections"' in form
    assert (await admin.http.get("/admin/live/feed")).status_code == 401  # not a page: no redirect


async def test_logging_in_sets_a_cookie_for_the_admin_ui_only(admin: Admin) -> None:
    response = await admin.login()
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/streams"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("eskit_admin=eskit_")
    for part in ("HttpOnly", "Path=/admin", "SameSite=strict"):
        assert part.lower() in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http here; https gets Secure
    assert "Audit" in await admin.page("/admin/audit")
    assert (await admin.http.get("/events")).status_code == 401  # the API ignores the cookie


async def test_login_refuses_unknown_and_non_admin_tokens(admin: Admin) -> None:
    wrong = await admin.http.post("/admin/login", data={"token": "eskit_nope"})
    assert wrong.status_code == 401
    assert "that token is not valid" in wrong.text
    reader = await admin.http.post("/admin/login", data={"token": admin.tokens["reader"]})
    assert reader.status_code == 403
    assert "has no admin scope" in reader.text
    assert "set-cookie" not in reader.headers


async def test_login_never_redirects_to_another_site(admin: Admin) -> None:
    for target in ("https://evil.example/", "//evil.example/admin/", "/admin\\@evil", "/docs"):
        response = await admin.http.post(
            "/admin/login", data={"token": admin.tokens["admin"], "next": target}
        )
        assert response.headers["location"] == "/admin/", target


async def test_a_bearer_header_works_and_needs_the_admin_scope(admin: Admin) -> None:
    page = await admin.http.get("/admin/streams", headers=admin.as_("admin"))
    assert page.status_code == 200
    await admin.login()
    behind_a_proxy = {"Authorization": "Basic cHJveHk6c2VjcmV0"}  # not eskit's: the cookie counts
    assert (await admin.http.get("/admin/streams", headers=behind_a_proxy)).status_code == 200
    for name in ("reader", "writer", "invoice_reader"):
        refused = await admin.http.get("/admin/streams", headers=admin.as_(name))
        assert refused.status_code == 403
        assert "needs the admin scope" in refused.text


async def test_a_revoked_token_logs_the_browser_out(admin: Admin) -> None:
    await admin.login()
    await admin.page("/admin/streams")
    assert admin.token_file is not None
    admin.token_file.revoke("admin")
    admin.token_file._checked = -1e9  # re-read now rather than within a second
    response = await admin.http.get("/admin/streams", headers=PAGE)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/admin/login")


async def test_forms_need_the_csrf_token_and_this_sites_origin(admin: Admin) -> None:
    await admin.login()
    rebuild = "/admin/projections/invoice_list/rebuild"
    assert (await admin.http.post(rebuild)).status_code == 415  # not a form at all
    missing = await admin.http.post(rebuild, data={"csrf": "0" * 64})
    assert missing.status_code == 403
    assert "out of date" in missing.text
    foreign = await admin.http.post(
        rebuild, data={"csrf": "x"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert "from another site" in foreign.text
    done = await admin.submit(
        "/admin/projections",
        rebuild,
    )
    assert done.status_code == 303
    assert admin.app.state.eskit_admin.jobs["invoice_list"].user == "admin"


async def test_logging_out_forgets_the_cookie(admin: Admin) -> None:
    await admin.login()
    out = await admin.submit("/admin/streams", "/admin/logout")
    assert out.status_code == 303
    assert 'eskit_admin=""' in out.headers["set-cookie"]
    assert (await admin.http.get("/admin/streams", headers=PAGE)).status_code == 303


async def test_without_tokens_the_admin_ui_is_open_but_forms_still_need_csrf(
    open_admin: Admin,
) -> None:
    assert "Streams" in await open_admin.page("/admin/streams")
    login = await open_admin.http.get("/admin/login")
    assert login.status_code == 303  # nothing to log in to
    refused = await open_admin.http.post(
        "/admin/projections/invoice_list/rebuild", data={"csrf": ""}
    )
    assert refused.status_code == 403  # a page of another site cannot make us rebuild
    accepted = await open_admin.submit(
        "/admin/projections", "/admin/projections/invoice_list/rebuild"
    )
    assert accepted.status_code == 303


async def test_pages_forbid_inline_scripts_and_framing(admin: Admin) -> None:
    await admin.login()
    response = await admin.http.get("/admin/streams")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["cache-control"] == "no-store"
    script = await admin.http.get("/admin/static/admin.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await admin.http.get("/admin/static/../spec.py")).status_code == 404
