"""Config schema, loading with overrides and validation."""

import os
import re
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
    # not finite: a run with them trains on nothing a law can use
    ("c.pretrain.optim.lr = float('inf')", "pretrain.optim.lr must be a finite number"),
    ("c.pretrain.optim.lr_by_model.vit_tiny_s = float('inf')", "pretrain.optim.lr_by_model.vit_tiny_s must be a finite"),
    ("c.finetune.optim.lr = float('nan')", "finetune.optim.lr must be a finite number"),
    ("c.distill.temperature = float('inf')", "distill.temperature must be a finite number"),
    ("c.pretrain.optim.epochs = float('inf')", "pretrain.optim.epochs must be a finite number"),
    ("c.distill.alpha = float('nan')", "distill.alpha must be a finite number"),
    ("c.study.margin = float('inf')", "study.margin must be a finite number"),
    ("c.pretrain.optim.update(min_steps=100, max_steps=5)", "is below min_steps"),
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


@pytest.mark.parametrize("override, needle", [
    ("--config.pretrain.optim.lr=inf", "config.pretrain.optim.lr must be a finite number, got inf"),
    ("--config.pretrain.optim.epochs=inf", "config.pretrain.optim.epochs must be a finite number"),
    ("--config.distill.temperature=inf", "config.distill.temperature must be a finite number"),
])
def test_non_finite_overrides_are_one_line(tmp_path, override, needle):
  with pytest.raises(JaxscaleError, match=re.escape(needle)) as e:
    config_lib.load(write_config(tmp_path, "pass"), [override])
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("text, needle", [
    ("from jaxscale.config import base_config\ndef get_config(arg=None)\n  return base_config()\n",
     "line 2: expected ':'"),
    ("from jaxscale.config import base_config\n", "defines no get_config"),
    ("from jaxscale.config import base_config\ndef get_config(arg=None):\n  raise ValueError('no such setting')\n",
     "ValueError: no such setting"),
])
def test_a_broken_config_file_is_one_line(tmp_path, text, needle):
  path = tmp_path / "broken.py"
  path.write_text(text)
  with pytest.raises(JaxscaleError, match=re.escape(needle)) as e:
    config_lib.load(str(path))
  assert "\n" not in str(e.value) and "Traceback" not in str(e.value)


def test_a_variant_the_config_ignores_is_refused(tmp_path):
  plain = write_config(tmp_path, "pass")  # its get_config never reads its argument
  with pytest.raises(JaxscaleError, match="has no variants .* ':quick' would change nothing"):
    config_lib.load(f"{plain}:quick")
  default = os.path.join(os.path.dirname(__file__), "..", "configs", "default.py")
  assert config_lib.load(f"{default}:quick").study.models  # a config that reads its argument
  with pytest.raises(JaxscaleError, match="unknown variant 'nope'"):
    config_lib.load(f"{default}:nope")


def test_an_override_a_per_model_rate_shadows_is_refused(tmp_path):
  path = write_config(tmp_path, "c.pretrain.optim.lr_by_model.vit_tiny_s = 3e-3")
  with pytest.raises(JaxscaleError, match=r"--config\.pretrain\.optim\.lr does not reach vit_tiny_s: "
                                          r"config\.pretrain\.optim\.lr_by_model\.vit_tiny_s = 0\.003"):
    config_lib.load(path, ["--config.pretrain.optim.lr=1e-2"])
  c = config_lib.load(path, ["--config.pretrain.optim.lr=1e-2", "--config.pretrain.optim.lr_by_model.vit_tiny_s=1e-2"])
  assert c.pretrain.optim.lr == c.pretrain.optim.lr_by_model.vit_tiny_s == 1e-2
  # a rate for a model the config does not train shadows nothing
  other = write_config(tmp_path, "c.pretrain.optim.lr_by_model.vit_tiny_m = 3e-3", "other.py")
  assert config_lib.load(other, ["--config.pretrain.optim.lr=1e-2"]).pretrain.optim.lr == 1e-2
