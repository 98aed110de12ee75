"""Training engine: losses, mesh and sharding, jitted steps, checkpoints and the stage loop.

The entry point is :func:`jaxscale.train.loop.run_stage`; the `jaxscale train` command wraps it.
"""
