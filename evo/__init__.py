"""evo: an evolutionary population search over train.py."""

__version__ = "0.1.0"
