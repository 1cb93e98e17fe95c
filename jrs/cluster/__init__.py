"""The master's logic, free of I/O: the pool, claims, matching and fair share."""
