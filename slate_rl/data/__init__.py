"""Data formats: logged sessions (and, later, the replay buffer and D4RL datasets)."""
