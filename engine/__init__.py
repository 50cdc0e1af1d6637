"""engine stage of forkcode (see README)."""
