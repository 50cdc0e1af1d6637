"""datagen stage of forkcode (see README)."""
