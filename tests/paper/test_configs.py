"""configs/paper.py: every setting validates, follows the budget rule and spans the stated sizes;
the stand-ins of every dataset it names open through `jaxscale.data.sources` like the real ones."""

import pytest

import standins
from jaxscale import config as config_lib
from jaxscale.errors import JaxscaleError
from jaxscale.train.steps import num_train_steps

VARIANTS = ["imagenet100", "imagenet1k", "resnet", "64px", "imagenet100,oxford_flowers102",
            "imagenet100,oxford_iiit_pet", "64px,oxford_iiit_pet"]


@pytest.mark.parametrize("arg", VARIANTS)
def test_every_setting_validates_and_keeps_the_budget_rule(arg):
  c = config_lib.load(f"{standins.PAPER}:{arg}")
  assert c.data.image_size == 224 and c.model.dtype == "bfloat16"
  for stage, sizes in (("pretrain", c.study.dp), ("finetune", c.study.df)):
    steps = {num_train_steps(c[stage].optim, n) for n in sizes}
    assert len(steps) == 1, f"{stage} budget varies with the subset size: {steps}"
  assert list(c.study.dp) == sorted(c.study.dp) and list(c.study.df) == sorted(c.study.df)
  ladder = "resnet_paper" if arg.startswith("resnet") else "vit_paper"
  assert c.study.models == tuple(f"{ladder}_{r}" for r in ("xs", "s", "m", "l", "xl"))
  assert c.study.arms == ("plain", "distilled") and c.distill.stage == "pretrain"


def test_sizes_span_the_paper_ranges():
  c = config_lib.load(f"{standins.PAPER}:imagenet100")
  assert c.pretrain.dataset == "imagenet100" and c.finetune.dataset == "cifar100"
  assert c.study.dp[0] == 1000 and c.study.dp[-1] == 126_689          # the whole ImageNet-100 view
  assert c.study.df[0] == 100 and c.study.df[-1] == 50_000            # to cifar100's train split
  big = config_lib.load(f"{standins.PAPER}:imagenet1k")
  assert big.pretrain.dataset == "imagenet2012" and big.study.dp[-1] == 1_000_000
  assert config_lib.load(f"{standins.PAPER}:imagenet100,oxford_flowers102").study.df == (102, 320, 1020)
  assert config_lib.load(f"{standins.PAPER}:imagenet100,oxford_iiit_pet").study.df[-1] == 3680
  assert config_lib.load(f"{standins.PAPER}:64px").pretrain.dataset == "imagenet_resized/64x64"


def test_an_unknown_setting_is_one_line():
  with pytest.raises(JaxscaleError, match="unknown setting 'imagenet21k'") as e:
    config_lib.load(f"{standins.PAPER}:imagenet21k")
  assert "\n" not in str(e.value)
  with pytest.raises(JaxscaleError, match="unknown downstream task 'food101'"):
    config_lib.load(f"{standins.PAPER}:imagenet100,food101")


def test_standins_have_the_real_names_splits_and_label_sets(tmp_path):
  """Every dataset the paper configs name opens from its stand-in with the config's splits."""
  import tensorflow_datasets as tfds
  from jaxscale.data import sources
  tfds.disable_progress_bar()
  root = str(tmp_path)
  standins.build("oxford_flowers102", root, {"train": 102, "validation": 10, "test": 20})
  standins.build("oxford_iiit_pet", root, {"train": 37, "test": 10})
  standins.build("imagenet_resized/64x64", root, {"train": 20, "validation": 10})
  for arg, classes in (("imagenet100,oxford_flowers102", 102), ("64px,oxford_iiit_pet", 37)):
    c = config_lib.load(f"{standins.PAPER}:{arg}", [f"--config.data.data_dir={root}"])
    for split in (c.finetune.train_split, c.finetune.eval_split):
      src = sources.open_source(c.finetune.dataset, split, root)
      assert src.num_classes == classes and src.allows_flip
      ex = src[0]
      assert ex["image"].dtype.name == "uint8" and ex["image"].shape[-1] == 3 and ex["image"].shape[0] >= 240
  src = sources.open_source("imagenet_resized/64x64", "validation", root)
  assert src.num_classes == 1000 and src[0]["image"].shape == (64, 64, 3)
