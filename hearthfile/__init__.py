"""hearthfile: a peer-to-peer content-addressed blob daemon."""

__version__ = "0.1.0"
