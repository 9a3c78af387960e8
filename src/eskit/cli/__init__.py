"""The ``eskit`` command line: a thin shell over the library."""

from eskit.cli.app import app, main

__all__ = ["app", "main"]
