"""Search: ranked full-text search over the catalog (SQLite FTS5)."""
