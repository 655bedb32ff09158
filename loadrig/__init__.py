"""livemesh's load rig: spike scenarios, virtual LL-DASH players, chaos, reports, replay and
the 65-million-viewer scale model (``livemesh loadtest``; see docs/loadrig.md)."""
