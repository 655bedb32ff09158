"""The live data plane: source, encode, package, manifest state, MPD and origin."""
