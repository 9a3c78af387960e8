"""For any appends and any batch size, the runner builds what a plain fold of the same
events builds: part caught up from the backlog, part followed live; on every backend."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import eskit
from eskit.projections import ProjectionRunner
from tests.projections.models import BACKENDS, append, batched, counts, fold, store_url

pytestmark = pytest.mark.anyio

Appends = list[tuple[str, list[str]]]

appends = st.lists(
    st.tuples(
        st.sampled_from(["cart-1", "cart-2", "cart-3", "other-1"]),
        st.lists(st.sampled_from(["Added", "Removed", "Other"]), min_size=1, max_size=4),
    ),
    min_size=1,  # an empty log: see test_runner's test of the read model on an empty log
    max_size=25,
)


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(written=appends, batch_size=st.integers(1, 8), live_from=st.integers(0, 25))
async def test_the_counter_equals_a_fold_of_the_events(
    backend: str, written: Appends, batch_size: int, live_from: int
) -> None:
    backlog, live = written[:live_from], written[live_from:]
    with tempfile.TemporaryDirectory() as directory:  # a new store per example
        async with eskit.open_store(store_url(backend, Path(directory))) as store:
            for stream, types in backlog:
                await append(store, stream, *types)
            async with ProjectionRunner(store, [batched(batch_size)]) as runner:
                for stream, types in live:
                    await append(store, stream, *types)
                await runner.wait_until(await store.last_position())
                built = await counts(runner.database)

    assert built == fold((stream, type_) for stream, types in written for type_ in types)
