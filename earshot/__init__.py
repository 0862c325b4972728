"""earshot: a self-hosted speech gateway."""

__version__ = "0.1.0"
