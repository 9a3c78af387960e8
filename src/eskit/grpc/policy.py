"""What a gRPC append must pass: the raw-append policy of the HTTP API
(``eskit.web.raw_appends``). Without an application every type is accepted; with one
(``--app``), an event its registry does not decode, or that its aggregate does not apply, is
refused unless the stream's category is free-form (``AppSpec.free_form_categories``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from eskit.grpc.errors import invalid
from eskit.store.model import NewEvent

if TYPE_CHECKING:
    from eskit.application.commands import CommandBus


class AppendPolicy:
    """Checks the events of an append before anything is written."""

    def __init__(self, bus: CommandBus | None = None, free_form: Collection[str] = ()) -> None:
        self.bus = bus
        self.free_form = frozenset(free_form)

    async def check(self, stream: str, events: Sequence[NewEvent]) -> None:
        """``INVALID_ARGUMENT`` naming the event and why, unless the application takes it."""
        if self.bus is None:
            return
        from eskit.web.errors import ApiError  # the HTTP API's policy, reused as it is
        from eskit.web.raw_appends import check_raw_append

        try:
            await check_raw_append(self.bus, self.free_form, stream, events)
        except ApiError as error:
            raise invalid(f"{error.kind}: {error.message}") from None
