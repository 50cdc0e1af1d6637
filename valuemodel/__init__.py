"""valuemodel stage of forkcode (see README)."""
