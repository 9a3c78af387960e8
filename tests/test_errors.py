"""Error messages say what happened in words, whatever the combination."""

from __future__ import annotations

import pytest

import eskit

EXPECTED = [
    (eskit.ANY, "any version"),
    (eskit.NO_STREAM, "no stream"),
    (eskit.STREAM_EXISTS, "the stream to exist"),
    (0, "version 0"),
    (7, "version 7"),
]
ACTUAL = [
    ((None, False), "the stream does not exist"),
    ((3, False), "the stream is at version 3"),
    ((None, True), "the stream was deleted"),
]


@pytest.mark.parametrize(("expected", "expected_words"), EXPECTED)
@pytest.mark.parametrize(("actual", "actual_words"), ACTUAL)
def test_wrong_expected_version_reads_well_for_every_combination(
    expected: eskit.ExpectedVersion,
    expected_words: str,
    actual: tuple[int | None, bool],
    actual_words: str,
) -> None:
    error = eskit.WrongExpectedVersion("invoice-1", expected, *actual)
    assert str(error) == f"stream 'invoice-1': expected {expected_words}, but {actual_words}"
    assert (error.stream, error.expected, error.actual, error.deleted) == (
        "invoice-1",
        expected,
        *actual,
    )
