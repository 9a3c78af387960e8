"""Metrics (Prometheus) and traces (OpenTelemetry) of the store, commands and projections.

Nothing is measured until ``instrument`` is called: an uninstrumented store pays one
attribute check per append.
"""

from __future__ import annotations

from eskit.observability.metrics import Metrics, instrument

__all__ = ["Metrics", "instrument"]
