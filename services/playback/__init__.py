"""Playback: press play — authorise, pick edges, hand out signed manifest URLs."""
