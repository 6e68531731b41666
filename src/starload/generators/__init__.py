"""Built-in event generators (registered as plugins through :mod:`starload.hookspecs`)."""
