"""slate_rl."""
