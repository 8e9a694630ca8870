"""``make docs``: the tables of docs/ that are made from the code.

docs/tiktok.md's table of TikTok's answer codes comes from ``workers/tiktok/codes.py``
(the settings table of docs/configuration.md comes from ``parcelflow config --readme``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from workers.tiktok.codes import table_rows

START, END = "<!-- codes:", "<!-- /codes -->"
HEADERS = (
    "| code | TikTok's meaning | page | verdict |",
    "|---|---|---|---|",
)


def codes_table() -> str:
    rows = table_rows()
    codes = [r for r in rows if r.split("|")[1].strip().isdigit()]
    actions = [r for r in rows if r not in codes]
    return "\n".join(
        [*HEADERS, *codes, "", "| verdict | what parcelflow does |", "|---|---|", *actions]
    )


def main(path: str = "docs/tiktok.md") -> None:
    doc = Path(path)
    text = doc.read_text()
    start = text.index("\n", text.index(START)) + 1
    end = text.index(END)
    doc.write_text(text[:start] + codes_table() + "\n" + text[end:])


if __name__ == "__main__":
    main(*sys.argv[1:])
