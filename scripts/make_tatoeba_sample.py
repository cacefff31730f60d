"""Cut the bundled Japanese-English sample out of the shared Tatoeba dump.

Run once by a maintainer; the output under data/tatoeba-ja-en/ is committed so that a fresh clone trains with no
download. Each split keeps the Tatoeba sentence id per line (the licence's attribution requirement).
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

SPLITS = {"train": 20000, "valid": 500, "test": 499}  # test is odd-sized on purpose: nothing may be dropped.


def main() -> None:
    """Select short, deduplicated pairs at random (fixed seed) and write parallel text files."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tsv", type=Path, help="shared/data/tatoeba/ja-en.tsv")
    parser.add_argument("out", type=Path, help="output folder, e.g. data/tatoeba-ja-en")
    parser.add_argument("--max-chars", type=int, default=80, help="longest English side kept")
    args = parser.parse_args()

    with args.tsv.open(encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
    seen: set[str] = set()
    pairs = []
    for r in rows:
        ja, en = r["ja"].strip(), r["en"].strip()
        if not ja or not en or len(en) > args.max_chars or ja in seen:
            continue
        seen.add(ja)
        pairs.append((r["tatoeba_id"], ja, en))
    random.Random(1234).shuffle(pairs)

    args.out.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, n in SPLITS.items():
        chunk = pairs[start : start + n]
        start += n
        for suffix, col in (("id", 0), ("ja", 1), ("en", 2)):
            text = "".join(p[col] + "\n" for p in chunk)
            (args.out / f"{split}.{suffix}").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
