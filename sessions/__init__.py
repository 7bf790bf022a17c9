"""sessions: a session store for web and mobile backends, on Tarantool."""

__version__ = "0.1.0"
