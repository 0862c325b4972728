"""The conversation brain shared by text turns and (next) voice: chat client, turns, tools, approvals."""
