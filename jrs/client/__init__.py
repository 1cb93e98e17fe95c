"""The submit side: the queue of one cluster, its journal, job log and progress."""
