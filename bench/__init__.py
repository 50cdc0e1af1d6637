"""bench stage of forkcode (see README)."""
