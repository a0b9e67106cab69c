"""slate_rl: reproducible online and offline RL for slate recommendation.

Layers (imports only go downward): stages > report > offline > online > models > data >
sim > core. Importing a module does no work beyond definitions.
"""

__version__ = "0.1.0"
