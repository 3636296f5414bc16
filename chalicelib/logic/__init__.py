"""Logic layer: the protocol core (transport-agnostic), sessions and queued jobs."""
