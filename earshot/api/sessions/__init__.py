"""Sessions: conversations owned by a key; push-to-talk, text turns with tools, and approvals over HTTP."""
