"""Foundation layer: errors, config helpers, counter-based RNG, devices, atomic IO.

Imports nothing else from slate_rl.
"""
