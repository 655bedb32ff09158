"""Live channels: lifecycle, ladder and latency settings, stream keys, live status."""
