"""The catalog: titles, series with seasons and episodes, live events (SQLite by default)."""
