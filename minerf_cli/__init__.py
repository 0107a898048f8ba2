"""minerf: one dynamic neural radiance field for many talking-face identities."""

__version__ = "0.1.0"
