"""bench_study's table header names the grid each way runs: the `commit` and `study` ways run the
commit's own config file, whose grid is not --config's."""

import os
import shutil
import sys
import types

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import bench_study  # noqa: E402

from jaxscale import config as config_lib  # noqa: E402


def _args(tree, commit_config="configs/default.py", fraction="full"):
  return types.SimpleNamespace(config=os.path.join(ROOT, "configs", "default.py"), fraction=fraction, tree=tree,
                               commit="abc1234", commit_config=commit_config, overrides=())


def test_header_names_the_commits_grid_beside_the_configs(tmp_path):
  os.makedirs(tmp_path / "configs")
  with open(tmp_path / "configs" / "default.py", "w") as f:   # an "earlier" default: another grid
    f.write("from jaxscale.config import base_config\n\n"
            "def get_config(arg=None):\n  c = base_config()\n  c.study.models = ('vit_tiny_xs', 'vit_tiny_s')\n"
            "  c.study.dp = (100, 300, 1000)\n  c.study.seeds = (0, 1)\n  return c\n")
  config = config_lib.load(os.path.join(ROOT, "configs", "default.py"), [])
  line = bench_study.header(_args(str(tmp_path)), config, ["study", "commit"], 300e9)
  assert "study, commit: abc1234:configs/default.py (full): models ('vit_tiny_xs', 'vit_tiny_s'), dp (100, 300, 1000)" in line
  assert "(160, 800, 4000, 16000)" not in line   # today's grid is not what those ways ran
  both = bench_study.header(_args(str(tmp_path)), config, ["engine", "commit"], 300e9)
  assert "engine: " in both and "(160, 800, 4000, 16000)" in both and "abc1234" in both
  assert both.endswith("float32 matmul peak 300.0 GFLOP/s")


def test_header_of_an_unreadable_commit_config_names_it(tmp_path):
  os.makedirs(tmp_path / "configs")
  shutil.copy(os.path.join(ROOT, "configs", "default.py"), tmp_path / "configs" / "old.py")
  with open(tmp_path / "configs" / "old.py", "a") as f:
    f.write("\nraise ImportError('an earlier schema')\n")
  config = config_lib.load(os.path.join(ROOT, "configs", "default.py"), [])
  line = bench_study.header(_args(str(tmp_path), "configs/old.py"), config, ["commit"], 300e9)
  assert "commit: abc1234:configs/old.py (full): grid not readable" in line
  assert "(160, 800, 4000, 16000)" not in line
