"""Video on demand: per-title ladders, on-demand DASH packaging, publishing to the store."""
