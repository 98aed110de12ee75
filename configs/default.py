"""The embedded default study: glyph letters (pretraining) -> glyph digits and symbols (downstream).

`make study` runs it on a laptop CPU. Variants are arguments:

  --config configs/default.py          the study (4 ViT widths x 4 Dp x 3 Df x 2 arms x 4 seeds)
  --config configs/default.py:quick    a first look in under 5 minutes (2 widths, 3 Dp, 3 Df, 2 seeds)
  --config configs/default.py:digits   the same study fine-tuned on the real UCI handwritten digits
  --config configs/default.py:control  the study with a third arm, the smoothed control (label smoothing)
  --config configs/default.py:pruning  which Dp images, not only how many: random against prototype-pruned

Every number below is chosen for a reason given beside it. "Pilot" numbers come from
`benchmarks/pilot_default.py` (the same models, subsets, optimizer and schedule in one vmapped
program) and from `jaxscale study` runs of the `:quick` variant; means over 2 seeds.
Cost: 513 runs (1 teacher, 128 pretraining, 384 fine-tuning), 3.3M pretraining and 1.8M
fine-tuning images; on a fresh clone on 2 cores (the CPU split into two devices) `make study` took
10m55s (8m29s of it training), peak memory 1.7 GB. `--config.study.seeds=0,1,2` trains 3/4 of the runs
(about 8 minutes, not measured).
"""

from jaxscale.config import base_config

# ---------------------------------------------------------------------------- budgets
# Along Dp and Df only the data vary: every pretraining run takes the same number of updates of
# the same batch, whatever its Dp (small subsets are repeated for many epochs), and every fine-tune
# likewise whatever its Df. The step rule is max(min_steps, ceil(epochs * size / batch)) capped by
# max_steps, so min_steps = max_steps = N fixes it at N.
#
# Pretraining: 800 steps of batch 32 = 25,600 images per run (~100 epochs at Dp = 250, 6.4 at
# Dp = 4,000). Pilot (vit_tiny_xs/s/m = widths 24/32/48, 2 seeds, lr 2e-3): every run is past the loss
# plateau (training loss from ln 52 = 3.95 down to 0.5 (width 24) / 0.02 (width 48) at Dp = 250,
# 1.4-2.4 at Dp = 4,000), error is below chance 0.981 at every Dp (0.88-0.92 at Dp = 250), falls with
# both Dp and width, and a fine-tune from every pretrained backbone beats one from a random init
# (symbols, Df = 100: 0.49-0.84 vs 0.80-0.89). Batch 32 beats batch 64 at the same images (width 48,
# Dp = 4,000: error 0.43 +- 0.01 vs 0.52 +- 0.05 over seeds): more updates, and a seed spread 5x
# smaller, which is what a paired comparison needs.
# Peak lr: a sweep (`pilot_default.py --pt-lr`, plain, 2 seeds; lr 2e-3 from a 4-seed study) gave
# glyph error at Dp = 1,600 / 4,000, widths 16 / 24 / 32 / 48:
#   lr 1e-3   0.90/0.89  0.86/0.83  0.76/0.76  0.67/0.62
#   lr 2e-3   0.80/0.77  0.71/0.67  0.65/0.60  0.51/0.47
#   lr 4e-3   0.75/0.70  0.63/0.58  0.53/0.48  0.39/0.36
#   lr 8e-3   0.70/0.67  0.56/0.57  0.52/0.55  0.50/0.47
# and lr falling with width (`optim.lr_by_model`) 12/8/6/4e-3: 0.65/0.69 0.55/0.58 0.54/0.50
# 0.38/0.34; 16/12/8/6e-3: 0.66/0.68 0.60/0.59 0.49/0.59 0.51/0.38. 4e-3 is the best lr of the
# widest rung and within 0.1 of the best of the others; unlike the larger ones, it left the pilot's
# error falling with both Dp and width in every cell, with a seed SD of at most 0.07. One lr for
# all widths, then (the earlier 2e-3 under-trained every width by 0.05-0.13).
PT_STEPS, PT_BATCH, PT_LR = 800, 32, 4e-3
# Fine-tuning: 150 steps of batch 32 = 4,800 images (48 epochs at Df = 100, 4.8 at Df = 1,000), a
# full fine-tune of the pretrained backbone with a new zero-initialised head.
FT_STEPS, FT_BATCH, FT_LR = 150, 32, 1e-3


def _fixed_steps(optim, steps: int, batch: int, lr: float) -> None:
  """A fixed step budget: `steps` updates of `batch` whatever the subset size."""
  optim.update(batch_size=batch, lr=lr, min_steps=steps, max_steps=steps, epochs=1.0,
               warmup_frac=0.1, eval_batch_size=1000)


def get_config(arg=None):
  variant = arg or "full"
  if variant not in ("full", "quick", "digits", "pruning", "control"):
    from jaxscale.errors import JaxscaleError
    raise JaxscaleError(f"unknown variant {variant!r} of configs/default.py; use :quick, :digits, :pruning, "
                        ":control or none")
  c = base_config()
  c.seed = 0
  c.data.image_size = 16
  # Pretraining source: 52 synthetic letter classes, 30,000 train / 2,600 test images.
  c.pretrain.dataset = "jaxscale_glyphs/16px_30k"
  c.pretrain.crop_padding = 0                 # glyphs are centred and jittered by the renderer
  _fixed_steps(c.pretrain.optim, PT_STEPS, PT_BATCH, PT_LR)
  # Downstream: 20 classes no pretraining class uses (digits 0-9 and # $ % & ? @ + = < >) from the
  # same renderer, with a 5,000-image test split (one run's error has SE <= 0.007), so the paired
  # differences between arms (0.03-0.12 in the pilot) are resolved by the test set.
  c.finetune.dataset = "jaxscale_symbols/16px"
  c.finetune.crop_padding = 0
  if variant == "digits":
    # The real UCI digits (1,437 train / 360 test, 8 -> 16 px): real handwriting, but its test split
    # gives one run's error an SE of ~0.02, too coarse for the paired verdict at this scale.
    c.finetune.dataset = "jaxscale_digits/16px"
  _fixed_steps(c.finetune.optim, FT_STEPS, FT_BATCH, FT_LR)
  c.distill.update(stage="pretrain", alpha=0.5, temperature=2.0)
  c.checkpoint.every_steps = 400

  # ---------------------------------------------------------------------------- the grid
  # Models: the tiny ViT ladder, depth 2, widths 16 / 24 / 32 / 48 (10K / 17K / 29K / 62K parameters
  # with the 52-class head; 6.6x from end to end). In the study error falls with width at every Dp
  # (plain pretraining, Dp = 4,000: 0.686 / 0.562 / 0.489 / 0.393 +- 0.008-0.032). Four rungs, so a
  # backtest that holds out the largest still fits the model-size term on three; the cheap
  # width-16 rung widens the span downwards, since wider ones (96: 4x the FLOPs of 48) cost more than
  # the budget allows on 2 cores.
  c.study.models = ("vit_tiny_xxs", "vit_tiny_xs", "vit_tiny_s", "vit_tiny_m")
  # Dp: x2.5 steps over 1.2 decades, from 5 images per class (plain error ~0.9, still below chance
  # 0.981) to 4,000 (6.4 epochs of the budget). Not beyond: at Dp = 16,000 the budget is 1.6 epochs
  # and the pilot's error no longer fell (width 48, lr 2e-3: 0.44 at 4,000, 0.46 at 16,000), i.e.
  # there the budget, not the data, would set the error. Already from 1,600 to 4,000 the gain is
  # small (plain pretraining: 0.005-0.06), and the training loss at 4,000 stays above that at 1,600.
  c.study.dp = (250, 630, 1600, 4000)
  # Df: 5, 15 and 50 images per class. Three values, so the law's Df term (C, gamma) is identified
  # (with two, any gamma fits them) and a backtest can hold out the largest Df.
  c.study.df = (100, 300, 1000)
  c.study.arms = ("plain", "distilled")
  # Paired seeds: a seed fixes the subset, the data order and the init in both arms, so
  # E_plain - E_distilled is taken per seed. Pilot: the SD of one cell's paired difference is
  # 0.01-0.06 (fine-tune errors vary more than pretraining ones); 4 seeds give SE 0.005-0.03 per
  # cell, against differences of 0.03-0.12; pooling over Df and widths narrows it further.
  c.study.seeds = (0, 1, 2, 3)
  # Margin δ (top-1 error): a difference inside ±0.03 is "no practical difference". Three points of
  # error are the smallest change a practitioner would switch pretraining recipes for at these error
  # levels (0.2-0.9); smaller margins cost seeds fast: at the study-wide level (64 points, each at
  # 1 - 0.05/64) a point with no true difference needs about 11 / 26 / 52 pairs for its interval to
  # fit inside ±0.03 at a pair SD of 0.02 / 0.04 / 0.06 (the pilot's 0.01-0.06), against 18 / 52 / 108
  # inside ±0.02. So 4 seeds decide only large effects; `jaxscale suggest` says where more pay.
  c.study.margin = 0.03
  # Teacher rule: the smallest rung (width 16), trained with the same fixed budget as every student,
  # on the whole pretraining split (30,000 images, each seen about once), with its own fixed seed
  # (`teacher_seed`, so `--config.study.seeds=...` keeps the teacher). "A small teacher that has seen
  # much data", as the paper frames it: smaller than every other student, and by construction inside
  # the students' range: it is the smallest model (so the plain largest student at large Dp beats it)
  # and it has the most data (so it beats students at small Dp). Measured in the study: the teacher's
  # glyph error is 0.719, against the plain students' 0.867-0.927 at Dp = 250 and plain
  # vit_tiny_m's 0.393 at Dp = 4,000. (With the width-24 rung as teacher, a pilot at lr 2e-3 had
  # distillation helping at every Dp; the weaker width-16 teacher puts the crossing the paper
  # predicts within reach of this grid, or shows it is absent.)
  c.study.teacher_model = "vit_tiny_xxs"    # named, so the :quick variant keeps the same teacher
  c.study.teacher_dp = 30000
  c.study.teacher_seed = 0
  # The joint law: both transfer forms are fitted per arm and the one with the lower mean backtest
  # log-RMSE (largest Dp, M and Df held out in turn) is reported (docs/laws.md).
  c.study.law = "auto"
  c.study.bootstrap = 200

  if variant == "quick":
    # A first look: two widths, 3 Dp, 2 seeds, same budgets and teacher (so every record is one the
    # full study would also make). Every Df stays: the transfer law needs Df to vary.
    c.study.models = ("vit_tiny_xs", "vit_tiny_m")
    c.study.dp = (250, 1600, 4000)
    c.study.seeds = (0, 1)
    c.study.bootstrap = 100
  if variant == "pruning":
    _pruning(c)
  if variant == "control":
    # The smoothed arm: the distilled arm's KD loss, alpha and T against a uniform teacher, i.e.
    # label smoothing (Yuan et al. 2020), paired by seed with both arms; distilled vs smoothed is
    # what the teacher's knowledge adds beyond soft targets. It trains in the distilled arm's
    # pretraining programs (no extra compile) and adds half the student runs: 769 runs (1 teacher,
    # 192 pretraining, 576 fine-tuning), 21.8 training TFLOPs against the default's 14.4 (x1.51,
    # `jaxscale study --dry-run`); with the default's 8m29s of training that is about 13 minutes of
    # training, 15-16 minutes in all on 2 cores (estimated from the FLOPs, not measured).
    c.study.arms = ("plain", "distilled", "smoothed")
  return c


def _pruning(c) -> None:
  """Pretraining subsets chosen by a data-pruning metric (Sorscher et al. 2022): the self-supervised
  prototype metric, k-means on the teacher's pre-head features, an image's difficulty its cosine
  distance to the nearest centroid; Dp images kept at random, the hardest or the easiest of each class.

  The plain arm only (the question is the selection, not distillation), at the default's Dp and Df,
  budgets and teacher (the scores' backbone: the width-16 rung on all 30,000 images, so every Dp of
  every selection is ranked by the same model). Two widths, 24 and 48 (4x apart in FLOPs), and the
  default's 4 paired seeds: a seed fixes the init, the data order and the Df subset in every
  selection, so E_pruned - E_random is taken per seed. Cost: 385 runs (1 teacher, 96 pretraining,
  288 fine-tuning), 14.3 training TFLOPs against the default study's 14.4, which took 10m55s on a
  fresh clone on 2 cores: about 11 minutes expected (not measured).
  """
  c.study.models = ("vit_tiny_xs", "vit_tiny_m")
  c.study.arms = ("plain",)
  c.study.selection = ("random", "prototypes_hard", "prototypes_easy")
  c.study.scores.update(backbone="", k=0, seed=0)   # the teacher; k = 0: one cluster per class (52)
