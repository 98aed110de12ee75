"""Input pipeline at 224 px: images/s per CPU core for JPEG decode, resize, random-resized crop and
flip, next to the images/s the ``vit_paper`` rungs consume, i.e. how many cores each rung needs.

The data are a stand-in of ``imagenet2012`` built in a temporary tfds dir with tfds's own builder
(``tests/paper/standins.py``): JPEGs (quality 90) of ImageNet's typical sizes, 500x375, 375x500 and
333x500, read back through ``jaxscale.data.sources`` exactly like a prepared ImageNet. Rows:

Rows marked "per CPU-second" time the process's CPU time (one thread does the work), so they are
images/s per core whatever else runs on the machine; wall-clock rows are not.

* ``decode``: read + JPEG decode (``Source.get_many``), one thread.
* ``decode + resize 224 (engine host)``: ``pipeline.read_images``: decode, centre square, resize to
  224 px uint8: the host's share in the training engine, which crops and flips on the device.
* ``decode + RRC + flip (classic)``: decode, Inception-style random-resized crop (area 8-100%,
  aspect 3/4-4/3) resized to 224, random flip, one thread: the usual ImageNet host pipeline.
* ``device crop + flip (on CPU)``: ``augment.train_augment`` jitted on this CPU at batch 64.
* ``DispatchReader, N workers``: the engine's grain reader (decode + resize) with N worker processes.

Step rates of the rungs: ``--step-rates`` gives measured images/s (``bench_train.py`` on a GPU);
else they are derived from the recorded H100 figures (bfloat16, batch 256: MFU 8% for
``vit_paper_xs`` and 28% for ``vit_paper_xl``) as ``MFU x peak / (3 x forward FLOPs per image)``
with ``--gpu-peak`` the bf16 matmul peak those MFUs are relative to (default 700 TFLOP/s, a
typical measured H100 SXM figure; the data sheet says 989). The other rungs have no recorded
figure. ``--cpu-rungs`` also measures rungs' train steps on this CPU (float32; slow to compile).

  python benchmarks/bench_data.py [--images 96] [--workers 0 2] [--cpu-rungs vit_paper_xs]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time

import numpy as np
from PIL import Image

IMAGE_SIZE = 224
JPEG_SIZES = ((375, 500), (500, 375), (500, 333))   # (height, width) of typical ImageNet images
RECORDED_MFU = {"vit_paper_xs": 0.08, "vit_paper_xl": 0.28}   # H100, bfloat16, batch 256


def _standins():
  path = os.path.join(os.path.dirname(__file__), "..", "tests", "paper", "standins.py")
  spec = importlib.util.spec_from_file_location("standins", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def build_jpegs(root: str, n: int):
  """A stand-in imagenet2012 train split of `n` JPEGs of ImageNet's typical sizes; returns its Source."""
  import tensorflow_datasets as tfds
  from jaxscale.data import sources
  tfds.disable_progress_bar()
  standins = _standins()
  standins.JPEG_SIZES = JPEG_SIZES
  standins.build("imagenet2012", root, {"train": n, "validation": 1}, classes=list(range(100)))
  return sources.open_source("imagenet2012", "train", root)


def rate(fn, n: int, repeats: int = 3, clock=time.perf_counter) -> float:
  """Best images/s of `fn()` (which processes `n` images) over `repeats` runs after a warm-up.

  With ``clock=time.process_time`` the time is this process's CPU time (all its threads), so a
  one-thread row reads as images per CPU-second, independent of other load on the machine.
  """
  fn()
  best = float("inf")
  for _ in range(repeats):
    t = clock()
    fn()
    best = min(best, clock() - t)
  return n / max(best, 1e-9)


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
  """Inception-style crop: area 8-100% of the image, aspect 3/4-4/3, resized to size x size; random flip."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(0.08, 1.0)
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      break
  else:
    ch = cw = min(h, w)
  top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
  pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR,
                                      box=(left, top, left + cw, top + ch))
  out = np.asarray(pil)
  return out[:, ::-1] if rng.uniform() < 0.5 else out


def host_rates(src, n: int, workers: list[int]) -> list[tuple[str, float]]:
  import jax
  from jaxscale.data import augment, pipeline
  idx = np.arange(n)
  cpu = time.process_time
  rows = [("decode (per CPU-second)", rate(lambda: src.get_many(idx), n, clock=cpu))]
  rows.append(("decode + resize 224, engine host (per CPU-second)",
               rate(lambda: pipeline.read_images(src, idx, IMAGE_SIZE, 3), n, clock=cpu)))

  def classic():
    rng = np.random.default_rng(0)
    images, _ = src.get_many(idx)
    return [random_resized_crop(im, rng) for im in images]
  rows.append(("decode + RRC + flip, classic (per CPU-second)", rate(classic, n, clock=cpu)))

  b = min(64, n)
  batch, _ = pipeline.read_images(src, idx[:b], IMAGE_SIZE, 3)
  key = np.asarray([0, 1], np.uint32)
  aug = jax.jit(lambda im: augment.train_augment(im, key, jax.numpy.arange(b), crop_padding=16, flip_ok=True))
  rows.append(("device crop + flip, jitted (per CPU-second)",
               rate(lambda: aug(batch).block_until_ready(), b, clock=cpu)))
  steps = 8
  order = np.arange(steps * 32).reshape(1, steps, 32) % n
  for w in workers:
    reader = pipeline.DispatchReader(src, order, steps_per_dispatch=1, image_size=IMAGE_SIZE, channels=3,
                                     prefetch=2, num_workers=w)
    it = reader.iterate(0)
    next(it)                                   # worker start-up and the first dispatch are not timed
    t = time.perf_counter()
    for _ in range(steps - 1):
      next(it)
    rows.append((f"DispatchReader, {w} worker processes (wall clock)",
                 (steps - 1) * 32 / (time.perf_counter() - t)))
    if hasattr(it, "close"):
      it.close()
  return rows


def rung_rates(gpu_peak: float, measured: dict[str, float]) -> list[tuple[str, float | None, str]]:
  from jaxscale import models
  out = []
  for name in models.ladder("vit_paper"):
    if name in measured:
      out.append((name, measured[name], "measured (--step-rates)"))
    elif name in RECORDED_MFU:
      train_flops = 3.0 * models.flops_per_image(name, 1000, IMAGE_SIZE)
      out.append((name, RECORDED_MFU[name] * gpu_peak / train_flops,
                  f"H100 record: MFU {RECORDED_MFU[name]:.0%} x {gpu_peak / 1e12:.0f} TFLOP/s"))
    else:
      out.append((name, None, "no recorded figure"))
  return out


def cpu_rung_rate(name: str, batch: int = 16, steps: int = 3) -> float:
  """Images/s of one run's train step of `name` at 224 px on this CPU (float32)."""
  import sys
  sys.path.insert(0, os.path.dirname(__file__))
  import bench_train
  return bench_train.bench_model(name, 100, IMAGE_SIZE, batch, steps, np.float32)["img_s"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=96, help="JPEGs in the stand-in (timed per pass)")
  parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DispatchReader worker counts")
  parser.add_argument("--gpu-peak", type=float, default=7e14, help="bf16 peak (FLOP/s) the recorded MFUs refer to")
  parser.add_argument("--step-rates", nargs="*", default=[], metavar="RUNG=IMG_S",
                      help="measured train-step images/s per rung, e.g. vit_paper_s=9000")
  parser.add_argument("--cpu-rungs", nargs="*", default=[], help="rungs whose train step to time on this CPU")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    t = time.perf_counter()
    src = build_jpegs(root, args.images)
    sizes = [os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(root) for f in fs if "train" in f]
    print(f"stand-in imagenet2012: {args.images} JPEGs of {', '.join(f'{w}x{h}' for h, w in JPEG_SIZES)}, "
          f"{sum(sizes) / args.images / 1e3:.0f} KB each on average (built in {time.perf_counter() - t:.0f} s); "
          f"{os.cpu_count()} CPU cores here")
    host = host_rates(src, args.images, args.workers)
  print(f"\n{'input path, 224 px':<52} {'images/s':>10}")
  for what, r in host:
    print(f"{what:<52} {r:>10,.0f}")
  per_core = host[1][1]
  measured = dict((k, float(v)) for k, v in (item.split("=", 1) for item in args.step_rates))
  print(f"\n{'rung':<14} {'train img/s':>12} {'cores to feed it':>17}  source")
  for name, img_s, source in rung_rates(args.gpu_peak, measured):
    cores = "-" if img_s is None else f"{img_s / per_core:,.0f}"
    shown = "-" if img_s is None else f"{img_s:,.0f}"
    print(f"{name:<14} {shown:>12} {cores:>17}  {source}")
  for name in args.cpu_rungs:
    r = cpu_rung_rate(name)
    print(f"{name:<14} {r:>12,.1f} {r / per_core:>17.2f}  this CPU, float32, batch 16")
  print(f"\ncores = train img/s / {per_core:,.0f} (decode + resize 224 per CPU-second, the engine's host share); "
        "wall-clock rows depend on the load on this machine")


if __name__ == "__main__":
  main()
