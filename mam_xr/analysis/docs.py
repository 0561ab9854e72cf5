"""Regenerate the registry tables of docs/analysis.md: ``python -m mam_xr.analysis.docs docs/analysis.md``.

The tables sit between ``<!-- statistics: generated -->`` / ``<!-- parameters: generated -->``
and ``<!-- end -->`` markers; everything else in the file is kept.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from . import registry


def update(path) -> bool:
    """Rewrite the generated tables of ``path``; True if the file changed."""
    path = Path(path)
    text = path.read_text()
    new = text
    for marker, table in (("statistics", registry.markdown_table()),
                          ("parameters", registry.markdown_parameters())):
        pattern = re.compile(rf"(<!-- {marker}: generated -->\n).*?(<!-- end -->)", re.S)
        if not pattern.search(new):
            raise SystemExit(f"{path}: no '<!-- {marker}: generated -->' ... '<!-- end -->' block")
        new = pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), new)
    if new != text:
        path.write_text(new)
    return new != text


if __name__ == "__main__":
    for p in sys.argv[1:] or ["docs/analysis.md"]:
        print(f"{p}: {'updated' if update(p) else 'up to date'}")
