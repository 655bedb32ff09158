"""Search's own index of the catalog's titles: SQLite FTS5 in memory.

Fed from the catalog (:mod:`services.catalog.feed`), it holds nothing that is not in the
catalog's database, so it is rebuilt at every start rather than kept. ``titles_fts``
indexes display title, synopsis and genres with the ``unicode61`` tokenizer (diacritics
folded) and prefix indexes of 2 and 3 characters so search-as-you-type stays cheap.
Ranking is BM25 with the title weighted above genres above synopsis.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from kernel.rpc.errors import InvalidArgument
from livemesh.catalog.v1 import catalog_pb2 as pb

SCHEMA = """
CREATE TABLE titles (name TEXT PRIMARY KEY, message BLOB NOT NULL);
CREATE VIRTUAL TABLE titles_fts USING fts5(
    name UNINDEXED, display_title, synopsis, genres,
    tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3'
);
"""
WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_WORDS = 16


@dataclass(frozen=True)
class Hit:
    title: pb.Title
    snippet: str
    score: float


def fts_query(text: str) -> str:
    """User text → an FTS5 query: every word must match, the last one as a prefix."""
    words = [w.lower() for w in WORD.findall(text)][:MAX_QUERY_WORDS]
    if not words:
        raise InvalidArgument("query", "has no searchable words")
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


class SearchIndex:
    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def put_many(self, titles: list[pb.Title]) -> None:
        """Index ``titles``, replacing what was indexed under their names."""
        with self.db:
            for title in titles:
                self.db.execute("DELETE FROM titles_fts WHERE name = ?", (title.name,))
                self.db.execute(
                    "INSERT OR REPLACE INTO titles VALUES (?, ?)",
                    (title.name, title.SerializeToString()),
                )
                self.db.execute(
                    "INSERT INTO titles_fts VALUES (?, ?, ?, ?)",
                    (title.name, title.display_title, title.synopsis, " ".join(title.genres)),
                )

    def search(self, text: str, offset: int, limit: int) -> list[Hit]:
        rows = self.db.execute(
            """
            SELECT t.message, snippet(titles_fts, 2, '[', ']', '...', 12),
                   bm25(titles_fts, 0.0, 10.0, 1.0, 3.0) AS rank
            FROM titles_fts JOIN titles t ON t.name = titles_fts.name
            WHERE titles_fts MATCH ? ORDER BY rank, t.name LIMIT ? OFFSET ?
            """,
            (fts_query(text), limit, offset),
        )
        return [Hit(pb.Title.FromString(blob), snippet, -rank) for blob, snippet, rank in rows]
