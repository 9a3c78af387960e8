"""``eskit serve``: the HTTP API with uvicorn, over a store URL and, optionally, an
application's commands and queries (``--app module:function``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

import eskit
from eskit.addresses import is_loopback
from eskit.cli.common import err, fail, import_attribute, run
from eskit.store.rules import DEFAULT_MAX_EVENT_SIZE
from eskit.web.readiness import DEFAULT_MAX_LAG
from eskit.web.tokens import TokenFile

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from eskit.grpc.server import GrpcSettings
    from eskit.web.spec import AppSpec


def serve(
    url: Annotated[
        str, typer.Option("--url", help="Store URL (embedded SQLite file by default).")
    ] = "sqlite:///./events.db",
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="module:function taking the store and returning an eskit.web.AppSpec (its"
            " commands, queries, read models), e.g. examples.invoicing.web:app_spec.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8000,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens", help="Token file (eskit tokens create); without it the API is open."
        ),
    ] = None,
    insecure: Annotated[
        bool, typer.Option(help="Serve without tokens on an address other hosts can reach.")
    ] = False,
    max_body: Annotated[
        int, typer.Option(min=1, help="Largest request body in bytes (413 above).")
    ] = DEFAULT_MAX_EVENT_SIZE,
    archive: Annotated[
        Path | None,
        typer.Option(
            "--archive",
            help="An archive (eskit archive) that stream reads with through_archive=true"
            " read through to.",
            show_default=False,
        ),
    ] = None,
    ready_max_lag: Annotated[
        int,
        typer.Option(
            min=0, help="Events a projection may lag behind before /health/ready answers 503."
        ),
    ] = DEFAULT_MAX_LAG,
    grpc: Annotated[
        str | None,
        typer.Option(
            "--grpc",
            help="Also serve KurrentDB's gRPC API on HOST:PORT (as eskit grpc does), with the"
            " same store, tokens and --app.",
            show_default=False,
        ),
    ] = None,
    grpc_tls_cert: Annotated[
        Path | None,
        typer.Option("--grpc-tls-cert", help="TLS certificate of --grpc.", show_default=False),
    ] = None,
    grpc_tls_key: Annotated[
        Path | None,
        typer.Option("--grpc-tls-key", help="TLS key of --grpc.", show_default=False),
    ] = None,
    grpc_unsafe_insecure: Annotated[
        bool,
        typer.Option(
            "--grpc-unsafe-insecure",
            help="Serve --grpc without TLS on an address other hosts can reach.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API: commands, queries, streams, the log and its live feed (SSE).

    The store is opened when the server starts and closed when it stops (Ctrl-C or
    SIGTERM). API docs at /docs, the OpenAPI document at /openapi.json, the admin UI at
    /admin, Prometheus metrics at /metrics, health checks at /health/live and /health/ready.

    Example: eskit serve --url sqlite:///./events.db --app examples.invoicing.web:app_spec
    """
    from eskit.web import AppSpec, Settings, server_for, serving_app  # FastAPI loads when used

    if tokens is None and not insecure and not is_loopback(host):
        fail(
            f"refusing to serve on {host} without tokens: anyone could write events. Give"
            " --tokens FILE (eskit tokens create), or --insecure if that is what you want"
        )
    token_file = _token_file(tokens)
    try:
        store = eskit.open_store(url)
        spec = load_spec(app_spec, store) if app_spec else AppSpec()
        if grpc is not None:
            from eskit.grpc.server import GrpcSettings

            settings = GrpcSettings(
                grpc, grpc_tls_cert, grpc_tls_key, token_file, grpc_unsafe_insecure
            )
            spec = with_grpc(store, spec, settings)
    except (ValueError, TypeError) as error:
        fail(str(error))
    app = serving_app(
        store,
        spec,
        tokens=token_file,
        settings=Settings(max_body=max_body, archive=archive),
        ready_max_lag=ready_max_lag,
    )
    console = err()
    console.print(
        Text(f"serving {url} on http://{host}:{port} (docs: /docs, admin UI: /admin)"),
        soft_wrap=True,
    )
    if token_file is None:
        console.print(
            Text(f"no tokens: anyone who can reach {host}:{port} may read and write", "yellow"),
            soft_wrap=True,
        )
    running = server_for(app, host, port)
    run(running.serve())
    if not running.started:
        fail("the server did not start (see the log above)")


def with_grpc(store: eskit.EventStore, spec: AppSpec, settings: GrpcSettings) -> AppSpec:
    """``spec`` running KurrentDB's gRPC API too, while the store is open, with the
    application's raw-append policy."""
    import contextlib
    import dataclasses

    from eskit.grpc.policy import AppendPolicy
    from eskit.grpc.server import GrpcServer
    from eskit.web.spec import running_part

    policy = AppendPolicy(spec.bus, spec.free_form_categories)
    server = GrpcServer(store, dataclasses.replace(settings, policy=policy))

    @contextlib.asynccontextmanager
    async def running() -> AsyncIterator[None]:
        async with running_part(spec):
            port = await server.start()
            err().print(Text(f"serving KurrentDB's gRPC API on {server.host}:{port}"))
            try:
                yield
            finally:
                await server.stop()

    return dataclasses.replace(spec, running=running)


def load_spec(spec: str, store: eskit.EventStore) -> AppSpec:
    """The ``AppSpec`` that ``module:function`` makes of ``store`` (or names directly)."""
    from eskit.web.spec import AppSpec

    found = import_attribute(spec)
    if callable(found) and not isinstance(found, AppSpec):
        found = found(store)
    if not isinstance(found, AppSpec):
        raise TypeError(f"--app {spec}: expected an eskit.web.AppSpec, got {found!r}")
    return found


def _token_file(path: Path | None) -> TokenFile | None:
    """The token file, checked now so that a typo fails at once rather than at every
    request."""
    if path is None:
        return None
    if not path.is_file():
        fail(f"no token file at {path}: create a token with eskit tokens create --file {path}")
    tokens = TokenFile(path)
    try:
        count = len(tokens.read())
    except (ValueError, OSError) as error:
        fail(str(error))
    if count == 0:
        err().print(Text(f"{path} holds no tokens: every request will get 401", "yellow"))
    return tokens
