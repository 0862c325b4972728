"""Fake cloud providers that speak each provider's real wire protocol, with injectable faults."""
