"""The browser player and its Python harness (tests and benches drive it)."""
