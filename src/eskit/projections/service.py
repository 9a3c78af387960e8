"""What runners, workers and consumers share: started and stopped around ``async with``."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Service:
    """Something that runs in the background between ``start()`` and ``stop()``."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
