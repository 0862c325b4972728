"""Voice: the conversation brain shared by text turns and voice (chat client, turns, tools, approvals), and
speech synthesis (espeak-ng embedded, OpenAI-shaped providers) with its voices."""
