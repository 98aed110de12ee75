"""Paper-scale studies: ImageNet pretraining at 224 px, fine-tuning on a tfds downstream task.

``--config configs/paper.py:SETTING[,DOWNSTREAM]``

SETTING (the pretraining side):

* ``imagenet100`` (default): the ImageNet-100 view (``imagenet100``, 100 classes of a prepared
  ``imagenet2012``, 126,689 train images), the ``vit_paper`` ladder (2.5M-38M parameters), Dp
  log-spaced from 1,000 to the whole view; the setting the paper reports most.
* ``imagenet1k``: all of ``imagenet2012`` (1,000 classes), Dp log-spaced from 1,000 to 1,000,000
  (the abstract's "1K-1M samples").
* ``resnet``: ``imagenet100`` with the ``resnet_paper`` ladder (BiT R26 widths, 2.7M-37M).
* ``64px``: ``imagenet_resized/64x64`` (all 1,000 classes, Dp 1K-1M), upsampled to 224 px so the
  ``vit_paper`` rungs keep their 196-token sequence (see the note at ``_sixty_four``).

DOWNSTREAM (the fine-tuning task; default ``cifar100``): ``cifar100`` (50,000 train / 10,000 test,
32 px upsampled), ``oxford_flowers102`` (1,020 train / 6,149 test), ``oxford_iiit_pet`` (3,680 train
/ 3,669 test). The config schema holds one downstream dataset per study, so the paper's several
downstream tasks are several studies, e.g. ``configs/paper.py:imagenet100,oxford_iiit_pet``; their
pretraining cells are identical but live in each study's own workdir.

Prepare the datasets once (TensorFlow is needed only for this, ``pip install 'jaxscale[tf]'``)::

  tfds build imagenet2012 --file_format=array_record --manual_dir=DIR_WITH_ILSVRC2012_TARS
  tfds build cifar100 oxford_flowers102 oxford_iiit_pet --file_format=array_record
  tfds build imagenet_resized/64x64 --file_format=array_record     # the 64px setting only

Choices the paper does not state, and why (every one is a config field; override any of them):

* Budgets follow one rule (the default study's): **every pretraining run sees the same number of
  examples whatever its Dp, and every fine-tune the same number whatever its Df** (``min_steps =
  max_steps``; ``epochs`` is then irrelevant). Along Dp and Df only the data vary; small subsets are
  repeated for more epochs. Were the budget to grow with the subset, the fitted "data" exponents would
  measure training length (as the embedded default once did).
* Pretraining budget: ``imagenet100`` 20,000 steps of 256 (5.1M examples, 40 epochs of the whole
  view); ``imagenet1k`` 30,000 steps of 1,024 (30.7M, 24 epochs of 1.28M); ``64px`` 10,000 steps of
  512 (5.1M, 5 epochs at Dp = 1M: the price of one GPU-day). Sized so the largest Dp is seen for
  several to tens of epochs (ViTs from scratch need that) while a ladder stays near a GPU-day.
  Grid totals (``jaxscale plan`` / ``study --dry-run``, cifar100 downstream): ``imagenet100`` 6.9
  EFLOPs, ``64px`` 9.5, ``imagenet1k`` 46, ``resnet`` 4.6. At the recorded H100 bfloat16 MFUs (8%
  for ``vit_paper_xs`` to 28% for ``vit_paper_xl`` of a 700 TFLOP/s matmul peak, the rungs between
  interpolated) that is about 13 H100-hours for ``imagenet100``, 18 for ``64px`` and 3.7 H100-days
  for ``imagenet1k`` (a TPU VM or several GPUs).
* Fine-tune budget: 2,000 steps of 128 (256K examples) for every Df: 5 epochs of cifar100's whole
  train split, about 250 of flowers'.
* Recipe: ViT pretraining is DeiT's without its heavy augmentation: AdamW, weight decay 0.05, label
  smoothing 0.1, 5% warmup then cosine, gradient clipping 1.0, peak lr 1e-3 at batch 256 and 2e-3 at
  512 and 1,024 (square-root scaling; linear scaling's 4e-3 at 1,024 is unstable for small ViTs
  with a short warmup). ResNets use SGD with momentum 0.9, lr 0.1 x batch/256 (Goyal et al.) and
  L2 5e-5. Fine-tuning follows big_vision's
  transfer recipe: SGD with momentum 0.9, lr 0.01, no weight decay, clipping 1.0, 5% warmup.
* Augmentation: the ImageNet recipe's random-resized crop (8-100% of the area, aspect 3/4-4/3,
  bilinear back to 224 px, on the device) and horizontal flips for pretraining; fine-tuning keeps
  big_vision's lighter padded random crop (16 px at 224 px) and flips.
* Teacher and KD: the smallest rung (``vit_paper_xs`` / ``resnet_paper_xs``) pretrained on the
  largest Dp, distilling the students during pretraining (``stage="pretrain"``) with alpha 0.5 and
  T 2. This is the paper's framing "from a small to a large model": a small teacher that saw all the
  data guides larger students that see Dp. Its error should lie inside the students' range (below
  the students' at small Dp, above the plain large students' at the largest Dp), which a crossing
  Dp* needs; the teacher's own pretrain record shows whether it does. alpha and T are the standard
  Hinton values; the paper gives none.
* Seeds: one seed (0) per cell, both arms paired on it; add seeds with
  ``--config.study.seeds='(0,1,2)'`` (cost grows linearly).
* Precision: bfloat16 compute (parameters float32): these configs are for accelerators.
* ``engine.group_size`` 1: by the CPU backend's memory count a pair of ``vit_paper_xl`` runs does
  not fit 80 GB (see the comment in ``get_config``); ``jaxscale plan`` on the accelerator says
  whether larger groups fit.
* ``data.num_workers`` 8 grain worker processes decode JPEGs. ``benchmarks/bench_data.py`` measures
  about 240 images per CPU-second for decode + resize to 224 px of ImageNet-sized JPEGs, while the
  recorded H100 rates are about 4,100 (``vit_paper_xl``) to 15,600 (``vit_paper_xs``) images/s: a
  GPU needs 17-65 cores (docs/data.md). Raise it to the cores a GPU has; results do not depend on it.
"""

import math

from jaxscale.config import base_config

SETTINGS = ("imagenet100", "imagenet1k", "resnet", "64px")

# Downstream task -> (train split size, eval split, first Df): Df log-spaced from ~100 to the split.
DOWNSTREAM = {
    "cifar100": (50_000, "test", 100),
    "oxford_flowers102": (1_020, "test", 102),    # one image per class at the smallest Df
    "oxford_iiit_pet": (3_680, "test", 100),
}

IMAGENET100_TRAIN = 126_689   # train images of the 100 classes of class_lists/imagenet100.txt
IMAGENET_TRAIN = 1_281_167


def log_spaced(lo: int, hi: int, per_decade: float = 2.0) -> tuple[int, ...]:
  """Integers from `lo` to `hi` (both exact), about `per_decade` per decade, two significant digits.

  ``log_spaced(1000, 126_689)`` -> (1000, 3400, 11000, 38000, 126689): `hi` is always a point,
  so the largest size is the whole split.
  """
  n = max(1, round(math.log10(hi / lo) * per_decade))
  out = [lo]
  for i in range(1, n):
    v = lo * (hi / lo) ** (i / n)
    digits = 10 ** max(int(math.floor(math.log10(v))) - 1, 0)
    out.append(int(round(v / digits) * digits))
  out.append(hi)
  return tuple(sorted(set(out)))


def _vit_pretrain(c, batch_size: int, steps: int, lr: float) -> None:
  c.pretrain.optim.update(optimizer="adamw", lr=lr, weight_decay=0.05, momentum=0.9, warmup_frac=0.05,
                          grad_clip=1.0, label_smoothing=0.1, batch_size=batch_size,
                          eval_batch_size=1024, epochs=1.0, min_steps=steps, max_steps=steps)


def _resnet_pretrain(c, batch_size: int, steps: int) -> None:
  c.pretrain.optim.update(optimizer="sgd", lr=0.1 * batch_size / 256, weight_decay=5e-5, momentum=0.9,
                          warmup_frac=0.05, grad_clip=1.0, label_smoothing=0.1,
                          batch_size=batch_size, eval_batch_size=1024, epochs=1.0,
                          min_steps=steps, max_steps=steps)


def _downstream(c, task: str) -> None:
  if task not in DOWNSTREAM:
    raise ValueError(f"unknown downstream task {task!r}; use one of {', '.join(DOWNSTREAM)}")
  size, eval_split, first = DOWNSTREAM[task]
  c.finetune.update(dataset=task, train_split="train", eval_split=eval_split, size=first,
                    flip=True, crop_padding=16)
  c.finetune.optim.update(optimizer="sgd", lr=0.01, weight_decay=0.0, momentum=0.9, warmup_frac=0.05,
                          grad_clip=1.0, label_smoothing=0.0, batch_size=128, eval_batch_size=1024,
                          epochs=1.0, min_steps=2000, max_steps=2000)
  c.study.df = log_spaced(first, size)


def _sixty_four(c) -> None:
  """imagenet_resized/64x64 upsampled to 224 px.

  The ``vit_paper`` rungs have 16 px patches, so 224 px inputs give the 196-token sequence of the
  224 px settings and the same FLOPs per image; what gets cheaper is the input side (64 px PNGs
  decode about 10x faster than ImageNet JPEGs), so one GPU is fed by few cores. A ladder with 4 px
  patches at 64 px (256 tokens, no upsampling) would also cut host-to-device traffic 12x; it needs
  a new registered ladder in ``jaxscale.models``.
  """
  c.pretrain.update(dataset="imagenet_resized/64x64", train_split="train", eval_split="validation")
  c.study.dp = log_spaced(1000, 1_000_000)
  _vit_pretrain(c, batch_size=512, steps=10_000, lr=2e-3)


def get_config(arg=None):
  setting, _, task = (arg or "imagenet100").partition(",")
  if setting not in SETTINGS:
    raise ValueError(f"unknown setting {setting!r}; use one of {', '.join(SETTINGS)}[,DOWNSTREAM]")
  c = base_config()
  c.seed = 0
  c.model.dtype = "bfloat16"
  c.data.update(image_size=224, num_workers=8, prefetch=2)
  c.mesh.update(data=-1, fsdp=1)
  c.checkpoint.update(every_steps=2000, keep=2)
  # The engine vmaps a group's runs on one device, so memory grows with the group. By the CPU
  # backend's count (`jaxscale plan --device-memory 80GB`) a vit_paper_xl run needs 45 GB per device
  # at batch 256, so a group of 2 (a Dp's plain and distilled runs) needs 90 GB and is refused.
  # Groups of 1 fit; raise config.engine.group_size where `jaxscale plan`, run on the accelerator
  # itself, says the groups fit (the small rungs gain the most from grouping).
  c.engine.update(group_size=1)
  c.pretrain.update(dataset="imagenet100", train_split="train", eval_split="validation",
                    size=1000, flip=True, crop_padding=0, random_resized_crop=True)
  _downstream(c, task or "cifar100")
  family = "resnet" if setting == "resnet" else "vit"
  c.study.models = tuple(f"{family}_paper_{rung}" for rung in ("xs", "s", "m", "l", "xl"))
  c.study.dp = log_spaced(1000, IMAGENET100_TRAIN)
  if setting == "resnet":
    _resnet_pretrain(c, batch_size=256, steps=20_000)
  else:
    _vit_pretrain(c, batch_size=256, steps=20_000, lr=1e-3)
  if setting == "imagenet1k":
    c.pretrain.dataset = "imagenet2012"
    c.study.dp = log_spaced(1000, 1_000_000)
    _vit_pretrain(c, batch_size=1024, steps=30_000, lr=2e-3)
  elif setting == "64px":
    _sixty_four(c)
  c.pretrain.size = min(c.study.dp)
  c.finetune.size = min(c.study.df)
  c.distill.update(stage="pretrain", alpha=0.5, temperature=2.0, teacher_model="", teacher_checkpoint="")
  c.study.update(arms=("plain", "distilled"), seeds=(0,), teacher_model="", teacher_dp=0,
                 law="transfer_additive", bootstrap=200)
  return c
