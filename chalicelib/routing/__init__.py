"""Message routing layer: who is connected where, pushing frames, dropping dead connections."""
