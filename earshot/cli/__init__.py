"""The earshot command line."""

from earshot.cli.accounts import register
from earshot.cli.main import app

register(app)

__all__ = ["app"]
