"""Shared test settings: small CPU runs, 8 simulated devices available to tests that ask for them."""

import os

# Tests run on the CPU; a test that needs several devices starts a subprocess with XLA_FLAGS.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Compiled programs are kept on disk and shared by the test workers (and their subprocesses).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(os.path.expanduser("~"), ".cache", "jaxscale", "xla-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_sessionstart(session):
  """JAX starts here with one CPU device in every test process, so a CLI test that runs in-process
  cannot split the CPU (config.engine.cpu_devices); a test's subprocesses start JAX their own way."""
  import jax
  jax.devices()
