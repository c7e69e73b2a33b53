"""Kettle: a container engine written in Python from first principles."""

__version__ = "0.1.0"
