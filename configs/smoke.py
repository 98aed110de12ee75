"""The smoke study: the default pipeline shrunk to finish in about 2 minutes on 2 CPU cores (tests, CI)."""

from jaxscale.config import base_config


def get_config(arg=None):
  c = base_config()
  c.data.image_size = 16
  c.pretrain.dataset = "jaxscale_glyphs/16px_1k"
  c.pretrain.optim.update(batch_size=64, lr=2e-3, epochs=1.0, min_steps=8, warmup_frac=0.1)
  c.pretrain.optim.lr_by_model.vit_tiny_s = 3e-3   # exercises the per-model learning rate
  c.finetune.dataset = "jaxscale_digits/16px"
  c.finetune.optim.update(batch_size=32, lr=1e-3, epochs=1.0, min_steps=6, warmup_frac=0.1,
                          eval_batch_size=512)
  c.pretrain.optim.eval_batch_size = 512
  c.checkpoint.every_steps = 4
  c.study.models = ("vit_tiny_xs", "vit_tiny_s")
  c.study.dp = (104, 312)
  c.study.df = (50, 150)
  c.study.arms = ("plain", "distilled")
  c.study.seeds = (0,)
  c.study.teacher_dp = 1000
  c.study.law = "transfer_additive"
  c.study.bootstrap = 20
  return c
