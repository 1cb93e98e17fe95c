"""JRS, the Job-Running System: a batch system that ships as one file."""

__version__ = "0.1.0"
