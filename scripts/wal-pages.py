#!/usr/bin/env python3
"""Which B-trees a SQLite commit writes, from a copy of a database and its WAL.

Each commit appends one frame per page it changed to the WAL, so frames per commit (and
whose pages they are) is what a write costs in I/O. Usage, while verifyd-bench runs:

    d=$(ls -d /tmp/.tmp*/ | head -1)   # the bench's database directory
    cp "$d/verifyd-bench.db-wal" /tmp/w.db-wal && cp "$d/verifyd-bench.db" /tmp/w.db
    python3 scripts/wal-pages.py /tmp/w.db

The copy of the WAL sits next to the copy of the database, so SQLite's dbstat (run on the
copy, WAL applied) names the B-tree of every page. Only the frames of the WAL's current
generation (its header's salt) are counted.
"""

import collections
import sqlite3
import struct
import sys


def main(db: str) -> None:
    with open(db + "-wal", "rb") as f:
        wal = f.read()
    _magic, _version, page_size, _seq, salt1, salt2, _c1, _c2 = struct.unpack(">8I", wal[:32])
    commits, current = [], []
    offset = 32
    while offset + 24 + page_size <= len(wal):
        page, db_size, s1, s2, _k1, _k2 = struct.unpack(">6I", wal[offset : offset + 24])
        if (s1, s2) != (salt1, salt2):
            break
        current.append(page)
        if db_size:  # a commit frame
            commits.append(current)
            current = []
        offset += 24 + page_size
    names = dict(
        (page, name)
        for name, page in sqlite3.connect(db).execute("SELECT name, pageno FROM dbstat")
    )
    frames = sum(map(len, commits))
    print(f"page size {page_size}, {len(commits)} commits, {frames / max(1, len(commits)):.1f} frames per commit")
    per_tree = collections.Counter(names.get(p, "?") for c in commits for p in c)
    for name, n in per_tree.most_common():
        print(f"{n / max(1, len(commits)):8.2f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1])
