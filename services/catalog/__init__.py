"""The catalog: titles, series with seasons and episodes, live events (in the database)."""
