"""The embedded default study: glyphs (pretraining) -> UCI digits (downstream), tiny ViT ladder.

Runs on a 2-core laptop CPU in about 15 minutes (`make study`). Variants are arguments, e.g.
``--config configs/default.py:resnet`` uses the tiny ResNet ladder.
"""

from jaxscale.config import base_config


def get_config(arg=None):
  c = base_config()
  family = arg or "vit"
  c.seed = 0
  c.data.image_size = 16
  c.pretrain.dataset = "jaxscale_glyphs/16px_30k"
  c.pretrain.crop_padding = 0
  # Pretraining budget grows with Dp (10 epochs, a floor of 20 steps): small subsets cannot get past
  # the initial loss plateau anyway, large ones then learn features worth transferring. The cap only
  # binds for the teacher (30k images -> 1,875 steps).
  c.pretrain.optim.update(batch_size=64, lr=5e-3, epochs=10.0, min_steps=20, max_steps=1875,
                          warmup_frac=0.1)
  c.finetune.dataset = "jaxscale_digits/16px"
  c.finetune.crop_padding = 0                 # digits are upsampled 8 -> 16 px: crops cut strokes
  c.finetune.optim.update(batch_size=16, lr=3e-3, epochs=2.5, min_steps=40, warmup_frac=0.1)
  c.distill.update(stage="pretrain", alpha=0.5, temperature=2.0)
  c.checkpoint.every_steps = 200
  c.study.models = tuple(f"{family}_tiny_{rung}" for rung in ("xs", "s", "m"))
  c.study.dp = (100, 300, 1000, 3200)       # 1.5 decades
  c.study.df = (100, 300, 1000)
  c.study.arms = ("plain", "distilled")
  c.study.seeds = (0, 1)
  c.study.teacher_model = ""                # smallest rung
  c.study.teacher_dp = 30000                # the whole pretraining split
  c.study.law = "transfer_additive"
  c.study.bootstrap = 200
  return c
