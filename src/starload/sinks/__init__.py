"""Built-in sinks; the contract every sink follows is in :mod:`starload.sinks.base`."""
