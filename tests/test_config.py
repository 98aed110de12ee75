"""Config schema, loading with overrides and validation."""

import textwrap

import pytest

from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError


def write_config(tmp_path, body: str, name: str = "cfg.py") -> str:
  path = tmp_path / name
  path.write_text("from jaxscale.config import base_config\n\n"
                  "def get_config(arg=None):\n  c = base_config()\n"
                  + textwrap.indent(textwrap.dedent(body), "  ") + "\n  return c\n")
  return str(path)


def test_base_config_is_valid():
  c = config_lib.validate(config_lib.base_config())
  assert c.pretrain.optim.optimizer == "adamw"


def test_load_applies_overrides(tmp_path):
  path = write_config(tmp_path, "c.seed = 5")
  c = config_lib.load(path, ["--config.pretrain.optim.lr=3e-4", "--config.study.dp=(10,100)"])
  assert c.seed == 5
  assert c.pretrain.optim.lr == pytest.approx(3e-4)
  assert tuple(c.study.dp) == (10, 100)


def test_get_config_arg_is_passed(tmp_path):
  path = tmp_path / "arg.py"
  path.write_text("from jaxscale.config import base_config\n"
                  "def get_config(arg=None):\n  c = base_config()\n  c.seed = int(arg or 0)\n  return c\n")
  assert config_lib.load(f"{path}:7").seed == 7


def test_unknown_field_in_config_names_it(tmp_path):
  path = write_config(tmp_path, "c.pretrain.optim.lrr = 0.1")
  with pytest.raises(JaxscaleError, match=r"unknown config field 'pretrain\.optim\.lrr'") as e:
    config_lib.load(path)
  assert "\n" not in str(e.value)


def test_override_of_missing_field_names_it(tmp_path):
  path = write_config(tmp_path, "pass")
  with pytest.raises(JaxscaleError, match=r"no field 'pretrain\.optim\.lrx'"):
    config_lib.load(path, ["--config.pretrain.optim.lrx=0.1"])
  with pytest.raises(JaxscaleError, match=r"no field 'nope\.x'"):
    config_lib.load(path, ["--config.nope.x=1"])


def test_bad_override_value_is_one_line(tmp_path):
  path = write_config(tmp_path, "pass")
  with pytest.raises(JaxscaleError, match="pretrain.optim.lr") as e:
    config_lib.load(path, ["--config.pretrain.optim.lr=abc"])
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("body, field", [
    ("c.pretrain.optim.optimizer = 'adam'", "pretrain.optim.optimizer"),
    ("c.distill.alpha = 1.5", "distill.alpha"),
    ("c.finetune.size = 0", "finetune.size"),
    ("c.pretrain.optim.lr = 'fast'", "pretrain.optim.lr"),
    ("c.finetune.optim.lr_by_model.vit_tiny_s = 0.0", "finetune.optim.lr_by_model.vit_tiny_s"),
    ("c.finetune.optim.lr_by_model = {'vit_tiny_s': 'fast'}", "finetune.optim.lr_by_model.vit_tiny_s"),
    ("c.study.arms = ('plain', 'kd')", "study.arms"),
])
def test_invalid_values_are_rejected(tmp_path, body, field):
  with pytest.raises(JaxscaleError, match=field.replace(".", r"\.")):
    config_lib.load(write_config(tmp_path, body))


def test_lr_by_model_takes_model_names_as_keys(tmp_path):
  path = write_config(tmp_path, "c.pretrain.optim.lr_by_model.vit_tiny_m = 3e-3")
  c = config_lib.load(path, ["--config.pretrain.optim.lr_by_model.vit_tiny_m=5e-3"])
  assert dict(c.pretrain.optim.lr_by_model) == {"vit_tiny_m": 5e-3}
  with pytest.raises(JaxscaleError, match="must map model names"):
    config_lib.load(write_config(tmp_path, "c.pretrain.optim = type(c)({**c.pretrain.optim.to_dict(), "
                                           "'lr_by_model': 'fast'})", "bad.py"))


def test_missing_file():
  with pytest.raises(JaxscaleError, match="does not exist"):
    config_lib.load("no/such/config.py")


def test_config_hash_is_stable_and_sensitive():
  a, b = config_lib.base_config(), config_lib.base_config()
  assert config_lib.config_hash(a) == config_lib.config_hash(b)
  b.seed = 1
  assert config_lib.config_hash(a) != config_lib.config_hash(b)
  assert config_lib.config_hash(a, exclude=["seed"]) == config_lib.config_hash(b, exclude=["seed"])


def test_result_hash_ignores_paths_and_grid():
  a, b = config_lib.base_config(), config_lib.base_config()
  b.data.data_dir = "/elsewhere"
  b.finetune.init_checkpoint = "/x/pretrain"
  b.distill.teacher_checkpoint = "/y/pretrain"
  b.study.dp = (1, 2, 3)
  assert config_lib.result_hash(a) == config_lib.result_hash(b)
  b.pretrain.optim.lr = 0.5
  assert config_lib.result_hash(a) != config_lib.result_hash(b)
