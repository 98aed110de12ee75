"""`python -m jaxscale` is the `jaxscale` console script."""

import sys

from jaxscale.cli import main

if __name__ == "__main__":
  sys.exit(main())
