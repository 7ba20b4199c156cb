"""recstack: deep-learning recommendation from event tables to served recommendations."""

__version__ = "0.1.0"
