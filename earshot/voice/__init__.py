"""Voice output: speech synthesis engines (espeak-ng embedded, OpenAI-shaped providers) and their voices."""
