"""The ground floor every plane stands on: clock, configuration, tokens, Redis, process
supervision, statistics, the HTTP wire contract and the RPC kernel.

Nothing here imports ``live``, ``edge``, ``services`` or anything above them.
"""
