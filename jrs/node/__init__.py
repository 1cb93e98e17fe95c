"""What runs on a compute node: taskfiles, the executor, the launcher, sandboxes."""
