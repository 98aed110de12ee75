"""Running the smoke study as a user would: `python -m jaxscale study` in a subprocess."""

import os
import subprocess
import sys

SMOKE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "smoke.py")


def study_cmd(workdir, data_dir, *extra):
  return [sys.executable, "-m", "jaxscale", "study", "--config", SMOKE, "--workdir", str(workdir),
          f"--config.data.data_dir={data_dir}", *extra]


def run_cmd(cmd, **kw):
  env = dict(os.environ, CI="true", JAX_PLATFORMS="cpu")
  return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, **kw)
