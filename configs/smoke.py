"""The smoke study: the default pipeline shrunk for tests and CI. On 2 shared, loaded CPU cores a whole
study took 41 s (compilation cache filled, data built) and 1m17s (building its data first).

`configs/smoke.py:control` adds the smoothed control arm (the distilled arm's KD loss against a
uniform teacher): 37 cells instead of 25, no extra program; the whole study took 63.9 -> 66.4
user-CPU s with the compilation cache off (compiles dominate), 27.5 -> 33.5 s with it filled by an
earlier run (each measured once, on a loaded 2-core machine).
"""

from jaxscale.config import base_config


def get_config(arg=None):
  if arg not in (None, "", "control"):
    from jaxscale.errors import JaxscaleError
    raise JaxscaleError(f"unknown variant {arg!r} of configs/smoke.py; use :control or none")
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
  c.study.arms = ("plain", "distilled", "smoothed") if arg == "control" else ("plain", "distilled")
  c.study.seeds = (0,)
  c.study.teacher_dp = 1000
  c.study.law = "transfer_additive"
  c.study.bootstrap = 20
  return c
