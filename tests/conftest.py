"""Shared test settings: small CPU runs, 8 simulated devices available to tests that ask for them."""

import os

# Tests run on the CPU; a test that needs several devices starts a subprocess with XLA_FLAGS.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
