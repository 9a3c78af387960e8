"""``python -m eskit.cli``: the ``eskit`` command without the installed script."""

from eskit.cli.app import main

main()
