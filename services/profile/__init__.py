"""Profiles: per-account viewer profiles, preferences and viewing history (Redis + cache)."""
