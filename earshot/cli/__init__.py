"""The earshot command line."""

from earshot.cli.accounts import register
from earshot.cli.listen import register as register_listen
from earshot.cli.main import app
from earshot.cli.transcripts import register as register_transcripts

register(app)
register_listen(app)
register_transcripts(app)

__all__ = ["app"]
