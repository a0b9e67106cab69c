"""Supervised models: MF item embeddings, the GeMS slate VAE, rankers (and, later, belief encoders)."""
