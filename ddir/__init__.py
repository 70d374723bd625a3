"""ddir: a live, multi-worker differential-dataflow server for DDIR programs."""

__version__ = "0.1.0"
