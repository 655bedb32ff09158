"""The embedded catalog store: SQLite, with an FTS5 index for search.

Titles are rows of ``titles`` (the protobuf message kept whole, plus the columns
that are filtered on); ``titles_fts`` indexes display title, synopsis and genres
with the ``unicode61`` tokenizer (diacritics folded) and prefix indexes of 2 and
3 characters so search-as-you-type stays cheap. Ranking is BM25 with the title
weighted above genres above synopsis.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from livemesh.catalog.v1 import catalog_pb2 as pb
from services.catalog.seed import demo_titles
from services.common.errors import InvalidArgument

SCHEMA = """
CREATE TABLE IF NOT EXISTS titles (
    name TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    parent TEXT NOT NULL,
    sort_key TEXT NOT NULL,
    message BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS titles_parent ON titles (parent, sort_key);
CREATE VIRTUAL TABLE IF NOT EXISTS titles_fts USING fts5(
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


class CatalogStore:
    """Titles in SQLite (``:memory:`` by default, seeded with the demo catalog)."""

    def __init__(self, path: str = ":memory:", seed: bool = True) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.executescript(SCHEMA)
        if seed and not self.db.execute("SELECT 1 FROM titles LIMIT 1").fetchone():
            self.put_many(demo_titles())

    def close(self) -> None:
        self.db.close()

    def put_many(self, titles: list[pb.Title]) -> None:
        with self.db:
            for title in titles:
                sort_key = f"{title.season_number:04d}{title.episode_number:04d}{title.name}"
                self.db.execute("DELETE FROM titles_fts WHERE name = ?", (title.name,))
                self.db.execute(
                    "INSERT OR REPLACE INTO titles VALUES (?, ?, ?, ?, ?)",
                    (title.name, title.kind, title.parent, sort_key, title.SerializeToString()),
                )
                self.db.execute(
                    "INSERT INTO titles_fts VALUES (?, ?, ?, ?)",
                    (title.name, title.display_title, title.synopsis, " ".join(title.genres)),
                )

    def get_many(self, names: list[str]) -> dict[str, pb.Title]:
        marks = ",".join("?" * len(names))
        rows = self.db.execute(f"SELECT name, message FROM titles WHERE name IN ({marks})", names)
        return {name: pb.Title.FromString(blob) for name, blob in rows}

    def get(self, name: str) -> pb.Title | None:
        return self.get_many([name]).get(name)

    def list_titles(self, parent: str, kind: int, offset: int, limit: int) -> list[pb.Title]:
        clauses: list[str] = []
        params: list[str | int] = []
        if parent:
            clauses.append("parent = ?")
            params.append(parent)
        if kind:
            clauses.append("kind = ?")
            params.append(kind)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self.db.execute(
            f"SELECT message FROM titles {where} ORDER BY sort_key LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [pb.Title.FromString(blob) for (blob,) in rows]

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
