"""jaxscale: data-efficient visual transfer-learning scaling studies in JAX/Flax."""

__version__ = "0.1.0"

from jaxscale.errors import JaxscaleError  # noqa: E402,F401
