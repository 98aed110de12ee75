"""Training engine: losses, mesh and sharding, the compiled group programs, checkpoints, the group loop.

The entry point is :func:`jaxscale.train.loop.train_group` (a group of runs trained as one vmapped,
scanned program); the `jaxscale train` command runs a group of one.
"""
