"""Online agents, their collector and the online training loop."""
