"""Stored transcripts: POST /v1/transcripts streams a growing document over SSE and keeps the result."""
