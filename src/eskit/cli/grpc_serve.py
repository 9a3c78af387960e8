"""``eskit grpc``: KurrentDB's gRPC API over a store, for KurrentDB's own clients."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

import eskit
from eskit.cli.common import Url, err, fail, run
from eskit.cli.serve import _token_file, load_spec

Listen = Annotated[
    str, typer.Option("--listen", help="HOST:PORT to listen on (KurrentDB's port is 2113).")
]
Cert = Annotated[
    Path | None,
    typer.Option("--tls-cert", help="TLS certificate (PEM); with --tls-key.", show_default=False),
]
Key = Annotated[
    Path | None,
    typer.Option("--tls-key", help="TLS private key (PEM); with --tls-cert.", show_default=False),
]
Unsafe = Annotated[
    bool,
    typer.Option(
        "--unsafe-insecure",
        help="Serve without TLS on an address other hosts can reach (traffic and credentials"
        " in clear).",
    ),
]


def grpc_command(
    url: Url,
    listen: Listen = "127.0.0.1:2113",
    tls_cert: Cert = None,
    tls_key: Key = None,
    tokens: Annotated[
        Path | None,
        typer.Option(
            "--tokens",
            help="Token file (eskit tokens create): clients log in with the token's name as"
            " username and the token as password. Without it every call may do everything.",
            show_default=False,
        ),
    ] = None,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="module:function returning an eskit.web.AppSpec: appends of types its"
            " registry does not decode are refused, except in its free-form categories.",
            show_default=False,
        ),
    ] = None,
    unsafe_insecure: Unsafe = False,
) -> None:
    """Serve KurrentDB's gRPC API (streams, subscriptions, gossip) over the store, so that
    KurrentDB's clients work against it.

    Example: eskit grpc sqlite:///./events.db --listen 127.0.0.1:2113, then connect with
    kurrentdb://127.0.0.1:2113?tls=false
    """
    from eskit.grpc import GrpcServer, GrpcSettings  # grpcio loads when used
    from eskit.grpc.policy import AppendPolicy

    token_file = _token_file(tokens)
    try:
        store = eskit.open_store(url)
        policy = AppendPolicy()
        if app_spec:
            spec = load_spec(app_spec, store)
            policy = AppendPolicy(spec.bus, spec.free_form_categories)
        settings = GrpcSettings(
            listen=listen,
            certificate=tls_cert,
            key=tls_key,
            tokens=token_file,
            unsafe_insecure=unsafe_insecure,
            policy=policy,
        )
        server = GrpcServer(store, settings)
    except (ValueError, TypeError) as error:
        fail(str(error))
    scheme = "tls=true" if settings.tls else "tls=false"

    def started(port: int) -> None:
        console = err()
        console.print(
            Text(
                f"serving {url} over KurrentDB's gRPC API on {server.host}:{port}"
                f" (kurrentdb://{server.host}:{port}?{scheme})"
            ),
            soft_wrap=True,
        )
        if token_file is None:
            console.print(Text("no tokens: every client may read and write", "yellow"))

    async def main() -> None:
        serving = asyncio.ensure_future(serve())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, serving.cancel)  # stop as Ctrl-C does
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        err().print(Text(f"stopped serving {url}"), soft_wrap=True)

    async def serve() -> None:
        async with store:
            await server.serve(started)

    run(main())
