"""The earshot command line."""

from earshot.cli.accounts import register
from earshot.cli.listen import register as register_listen
from earshot.cli.main import app

register(app)
register_listen(app)

__all__ = ["app"]
