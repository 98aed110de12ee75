"""2 processes over localhost (gloo CPU collectives, 2 devices each) == 1 process with 4 devices."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

SCRIPT = os.path.join(os.path.dirname(__file__), "multiproc.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices: int) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def test_two_processes_match_one_process(tmp_path):
  one = tmp_path / "one.json"
  subprocess.run([sys.executable, SCRIPT, str(one), "1", "0", "0", str(tmp_path / "c1")],
                 env=_env(4), check=True, timeout=300)
  two = tmp_path / "two.json"
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, SCRIPT, str(two), "2", str(i), port, str(tmp_path / "c2")],
                            env=_env(2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for i in range(2)]
  outs = [p.communicate(timeout=300)[0].decode()[-2000:] for p in procs]
  assert all(p.returncode == 0 for p in procs), outs
  a, b = json.loads(one.read_text()), json.loads(two.read_text())
  assert (a["processes"], a["devices"]) == (1, 4) and (b["processes"], b["devices"]) == (2, 4)
  np.testing.assert_allclose(b["losses"], a["losses"], rtol=0, atol=1e-5)
  np.testing.assert_allclose(b["kernel"], a["kernel"], rtol=0, atol=1e-5)
  assert (np.asarray(a["losses"][-1]) < np.asarray(a["losses"][0])).all()
  # Both processes saved and restored one orbax checkpoint of the group.
  assert b["restored_step"] == [3, 3] and b["meta"] == {"at": 3}
