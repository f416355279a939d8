"""grid-scheduler: a gRPC placement engine for AI grids."""

__version__ = "0.1.0"
