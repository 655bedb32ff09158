"""The cache node: edge and shield tiers in front of the origin."""
