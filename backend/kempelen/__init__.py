"""Kempelen: an open micropayment protocol for human data labeling."""

__version__ = "0.1.0"
