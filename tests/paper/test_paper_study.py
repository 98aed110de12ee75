"""A shrunken paper study end to end on the stand-ins, through the `jaxscale study` command: the
paper config's datasets (the ImageNet-100 view of imagenet2012 and cifar100, JPEG and PNG
decoding), grain reading (data kept off the device, as for real ImageNet), groups, distillation,
fine-tuning, records and fits. The fast test shrinks the model and the resolution; the slow one
runs the two smallest paper rungs at 224 px (the law
needs two model sizes)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import standins
from jaxscale.config import load
from jaxscale.study import grid, records

ARG = f"{standins.PAPER}:imagenet100,cifar100"


def shrink(data_dir, image_size, models, steps=3, batch=8):
  """Overrides that shrink configs/paper.py to seconds: sizes, steps, batch, model, resolution."""
  out = [f"--config.data.data_dir={data_dir}", "--config.model.dtype=float32",
         f"--config.data.image_size={image_size}", "--config.data.num_workers=0",
         f"--config.study.models={tuple(models)!r}", "--config.study.dp=(100,200)", "--config.study.df=(100,200)",
         "--config.study.bootstrap=5", f"--config.engine.steps_per_dispatch={steps}",
         "--config.engine.data_on_device=never"]
  for stage in ("pretrain", "finetune"):
    out += [f"--config.{stage}.optim.min_steps={steps}", f"--config.{stage}.optim.max_steps={steps}",
            f"--config.{stage}.optim.batch_size={batch}", f"--config.{stage}.optim.eval_batch_size=50",
            f"--config.{stage}.eval_subset=50"]   # the stand-ins' eval splits hold 100 images
    if image_size <= 32:
      out.append(f"--config.{stage}.crop_padding=2")
  return out


def run_study(workdir, overrides):
  cmd = [sys.executable, "-m", "jaxscale", "study", "--config", ARG, "--workdir", str(workdir),
         "--no-progress", *overrides]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=1800)


def check_study(workdir, overrides, steps):
  config = load(ARG, overrides)
  rows = records.read(str(workdir / "records.jsonl"))
  assert sorted(r["cell_id"] for r in rows) == sorted(c.id for c in grid.expand(config))
  for r in rows:
    assert r["steps"] == steps                      # the budget rule: same steps at every Dp and Df
    assert r["eval_count"] == 100                   # the whole eval split of each stand-in
    assert 0.0 <= r["eval_error"] <= 1.0 and r["diverged_at"] is None
  assert {r["dp"] for r in rows if r["stage"] == "pretrain"} == {100, 200}
  assert {r["df"] for r in rows if r["stage"] == "finetune"} == {100, 200}
  assert any(r["distilled"] and r["teacher"] for r in rows if r["stage"] == "pretrain")
  saved = json.loads((workdir / "study.json").read_text())["config"]
  assert saved["pretrain"]["dataset"] == "imagenet100" and saved["finetune"]["dataset"] == "cifar100"
  assert (workdir / "fits.json").exists()


def test_shrunken_paper_study_end_to_end(paper_data_dir, tmp_path):
  overrides = shrink(paper_data_dir, image_size=32, models=("vit_tiny_xs", "vit_tiny_s"))
  out = run_study(tmp_path / "study", overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  check_study(tmp_path / "study", overrides, steps=3)


@pytest.mark.slow
def test_paper_study_at_224px_with_the_smallest_paper_rung(paper_data_dir, tmp_path):
  overrides = shrink(paper_data_dir, image_size=224, models=("vit_paper_xs", "vit_paper_s"), steps=2, batch=4)
  out = run_study(tmp_path / "study", overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  check_study(tmp_path / "study", overrides, steps=2)


def test_224px_host_decode_and_device_augmentation(paper_data_dir):
  """The two halves of the engine's input path at the paper's resolution: the host decodes the
  stored JPEGs and resizes them to 224 px uint8; the device crops, flips and normalises."""
  from jaxscale.data import augment, pipeline, sources
  src = sources.open_source("imagenet100", "train", paper_data_dir)
  assert src[0]["image"].shape in {(h, w, 3) for h, w in standins.JPEG_SIZES}   # stored, not 224
  images, labels = pipeline.read_images(src, np.arange(8), 224)
  assert images.shape == (8, 224, 224, 3) and images.dtype == np.uint8
  assert labels.shape == (8,) and labels.max() < 100
  key = np.asarray([0, 7], np.uint32)
  x = np.asarray(jax.jit(lambda im, pos: augment.train_augment(im, key, pos, crop_padding=16, flip_ok=True))(
      images, np.arange(8, dtype=np.int32)))
  plain = np.asarray(augment.normalize(images))
  assert x.shape == (8, 224, 224, 3) and x.dtype == np.float32
  assert -1.0 <= x.min() and x.max() <= 1.0
  assert not np.allclose(x, plain)                   # cropped and/or flipped, not just normalised
