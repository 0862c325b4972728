"""earshot's Python client: live transcription from a file, stdin or a microphone.

Managed mode talks to an earshot server's /ws/transcribe with an earshot key; bring-your-own-key mode talks
to Deepgram's live /v1/listen (or any server that speaks it, earshot included).
"""

from earshot.client.deepgram_wire import DEEPGRAM_URL, DeepgramWire
from earshot.client.events import (
    AuthError,
    ConnectError,
    CreditsLow,
    ServerError,
    SessionEnd,
    Summary,
    TranscriberError,
    Transcript,
    UtteranceEnd,
)
from earshot.client.managed_wire import ManagedWire
from earshot.client.sources import (
    AudioSource,
    FileSource,
    MicrophoneSource,
    MicrophoneUnavailable,
    StdinSource,
)
from earshot.client.sync import BackgroundTranscriber
from earshot.client.transcriber import StreamingTranscriber

__all__ = [
    "DEEPGRAM_URL",
    "AudioSource",
    "AuthError",
    "BackgroundTranscriber",
    "ConnectError",
    "CreditsLow",
    "DeepgramWire",
    "FileSource",
    "ManagedWire",
    "MicrophoneSource",
    "MicrophoneUnavailable",
    "ServerError",
    "SessionEnd",
    "StdinSource",
    "StreamingTranscriber",
    "Summary",
    "TranscriberError",
    "Transcript",
    "UtteranceEnd",
]
