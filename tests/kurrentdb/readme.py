"""The Python code blocks of ``kurrentdbclient``'s own README (its package description),
read from the installed package, to run against eskit as they are written.

The README is one script in many blocks: the blocks after "Construct client" share one
namespace and connect to ``KDB_URI``; the synopsis connects to ``localhost:2113`` itself.
"""

from __future__ import annotations

import importlib.metadata
import re

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
HEADING = re.compile(r"^#+ (.*?)<a id=", re.M)
"""The README's headings end with an anchor (``## Synopsis<a id="synopsis"></a>``), which
tells them from the comments in its code."""


def blocks() -> list[tuple[str, str]]:
    """(heading, code) of every Python block, in order."""
    text = importlib.metadata.metadata("kurrentdbclient").get_payload()  # type: ignore[attr-defined]
    assert isinstance(text, str)
    found = []
    for match in BLOCK.finditer(text):
        headings = HEADING.findall(text, 0, match.start())
        found.append((headings[-1].strip() if headings else "", match.group(1)))
    return found


def sections(*names: str) -> list[tuple[str, str]]:
    """The blocks under the headings ``names``, in README order."""
    wanted = set(names)
    chosen = [(heading, code) for heading, code in blocks() if heading in wanted]
    missing = wanted - {heading for heading, _ in chosen}
    assert not missing, f"no such README sections: {sorted(missing)}"
    return chosen
