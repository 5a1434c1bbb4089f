"""Obliviate: erasure requests carried all the way into machine-learning models."""

__version__ = "0.1.0"
