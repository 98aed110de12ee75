"""Forward+backward throughput of every tiny rung: jaxscale (JAX/Flax NNX) vs the same network in PyTorch.

For each rung of `vit_tiny` and `resnet_tiny` this builds the jaxscale model and an equivalent
PyTorch module (same layers, widths, norms, activations and parameter count), then times one
training-style step without the optimizer update: forward, softmax cross-entropy, gradients of
every parameter. JAX and PyTorch measurements are interleaved (J, T, J, T, ...) so load from other
processes on the machine hits both alike; the table reports the median of the repeats. PyTorch
runs with 1 thread and with its default thread count; the ratio is against the faster of them.

    python benchmarks/bench_models.py                       # batch 256, 16 px, 5 repeats
    python benchmarks/bench_models.py --rungs vit_tiny_s --repeats 9 --torch-threads 2

PyTorch is not a jaxscale dependency: `pip install torch` (a CPU build) to run this.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jaxscale.models as models

try:
  import torch
  import torch.nn as tnn
  import torch.nn.functional as F
except ImportError:  # pragma: no cover - benchmark-only dependency
  torch = None


# ----------------------------------------------------------------------------- PyTorch mirrors

if torch is not None:

  class TorchViT(tnn.Module):
    """PyTorch twin of `jaxscale.models.vit.ViT` (GAP pool, fused qkv, pre-LN, tanh GELU)."""

    def __init__(self, cfg, num_classes: int, image_size: int):
      super().__init__()
      self.cfg = cfg
      p, d = cfg.patch_size, cfg.width
      grid = image_size // p
      self.patch_embed = tnn.Linear(p * p * 3, d)
      self.pos_embed = tnn.Parameter(torch.randn(1, grid * grid, d) * 0.02)
      self.blocks = tnn.ModuleList([TorchBlock(cfg) for _ in range(cfg.depth)])
      self.norm = tnn.LayerNorm(d, eps=1e-6)
      self.head = tnn.Linear(d, num_classes)

    def forward(self, x):                      # x: [B, H, W, 3] like the JAX model
      b, h, w, c = x.shape
      p = self.cfg.patch_size
      x = x.reshape(b, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, p * p * c)
      x = self.patch_embed(x) + self.pos_embed
      for blk in self.blocks:
        x = blk(x)
      return self.head(self.norm(x).mean(dim=1))

  class TorchBlock(tnn.Module):

    def __init__(self, cfg):
      super().__init__()
      d = cfg.width
      self.heads = cfg.num_heads
      self.norm1 = tnn.LayerNorm(d, eps=1e-6)
      self.qkv = tnn.Linear(d, 3 * d)
      self.out = tnn.Linear(d, d)
      self.norm2 = tnn.LayerNorm(d, eps=1e-6)
      self.fc1 = tnn.Linear(d, cfg.mlp_dim)
      self.fc2 = tnn.Linear(cfg.mlp_dim, d)

    def forward(self, x):
      b, n, d = x.shape
      h = self.heads
      qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4)
      y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])       # [B, H, N, Dh]
      x = x + self.out(y.transpose(1, 2).reshape(b, n, d))
      return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))

  class StdConv2d(tnn.Conv2d):
    """Weight-standardised bias-free conv (BiT), padding k//2."""

    def forward(self, x):
      w = self.weight
      w = w - w.mean(dim=(1, 2, 3), keepdim=True)
      w = w * torch.rsqrt(w.square().mean(dim=(1, 2, 3), keepdim=True) + 1e-8)
      return F.conv2d(x, w, None, self.stride, self.padding)

  def _std_conv(cin, cout, k, stride=1):
    return StdConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False)

  class TorchBasic(tnn.Module):

    def __init__(self, cin, mid, stride):
      super().__init__()
      g = models.resnet.num_groups
      self.gn1 = tnn.GroupNorm(g(cin), cin, eps=1e-5)
      self.proj = _std_conv(cin, mid, 1, stride) if (cin != mid or stride != 1) else None
      self.conv1 = _std_conv(cin, mid, 3, stride)
      self.gn2 = tnn.GroupNorm(g(mid), mid, eps=1e-5)
      self.conv2 = _std_conv(mid, mid, 3)

    def forward(self, x):
      y = F.relu(self.gn1(x))
      res = self.proj(y) if self.proj is not None else x
      y = self.conv1(y)
      return self.conv2(F.relu(self.gn2(y))) + res

  class TorchResNet(tnn.Module):
    """PyTorch twin of `jaxscale.models.resnet.ResNet` with the small stem and basic units."""

    def __init__(self, cfg, num_classes: int, image_size: int):
      super().__init__()
      assert cfg.stem == "small" and not cfg.bottleneck, "only the tiny ResNets are mirrored"
      self.stem = _std_conv(3, cfg.width, 3)
      units, cin = [], cfg.width
      for i, ((mid, cout), n) in enumerate(zip(cfg.stage_widths(), cfg.blocks)):
        for j in range(n):
          units.append(TorchBasic(cin, mid, 2 if (i > 0 and j == 0) else 1))
          cin = cout
      self.units = tnn.Sequential(*units)
      self.norm = tnn.GroupNorm(models.resnet.num_groups(cin), cin, eps=1e-5)
      self.head = tnn.Linear(cin, num_classes)

    def forward(self, x):                      # x: [B, H, W, 3]
      x = self.units(self.stem(x.permute(0, 3, 1, 2)))
      return self.head(F.relu(self.norm(x)).mean(dim=(2, 3)))


# ----------------------------------------------------------------------------- steps

def jax_step(name: str, num_classes: int, image_size: int):
  """A compiled fwd+bwd step `f(params, x, y) -> (loss, grads)` and the model's params."""
  model = models.create(name, num_classes, image_size, nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p, x, y):
    logits = nnx.merge(graphdef, p)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return jax.jit(jax.value_and_grad(loss_fn)), params


def torch_step(name: str, num_classes: int, image_size: int):
  s = models.spec(name)
  net = (TorchViT if s.family == "vit" else TorchResNet)(s.config, num_classes, image_size)
  params = list(net.parameters())

  def step(x, y):
    for p in params:
      p.grad = None
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss

  return step, net


def _time(fn, iters: int) -> float:
  t0 = time.perf_counter()
  for _ in range(iters):
    fn()
  return time.perf_counter() - t0


def bench_rung(name: str, batch: int, image_size: int, num_classes: int, repeats: int,
               min_time: float, torch_threads: tuple[int, ...]) -> dict:
  rng = np.random.default_rng(0)
  x_np = rng.uniform(-1, 1, (batch, image_size, image_size, 3)).astype(np.float32)
  y_np = rng.integers(0, num_classes, batch).astype(np.int64)

  jstep, jparams = jax_step(name, num_classes, image_size)
  jx, jy = jnp.asarray(x_np), jnp.asarray(y_np.astype(np.int32))
  run_jax = lambda: jax.block_until_ready(jstep(jparams, jx, jy))
  tstep, net = torch_step(name, num_classes, image_size)
  tx, ty = torch.from_numpy(x_np), torch.from_numpy(y_np)
  run_torch = lambda: tstep(tx, ty)

  n_jax = models.count_params(nnx.State(jparams))
  n_torch = sum(p.numel() for p in net.parameters())
  assert n_jax == n_torch, f"{name}: jax has {n_jax} params, torch {n_torch}"

  # PyTorch is timed with each intra-op thread count in `torch_threads`; the ratio is taken
  # against the fastest of them (on a shared machine one thread often beats two).
  runners = {"jax": run_jax}
  for n in torch_threads:
    runners[f"torch{n}"] = (lambda n=n: (torch.set_num_threads(n), run_torch()))
  # Warm up (compilation; allocator and oneDNN primitive caches) and size the timing loops.
  iters = {}
  for key, fn in runners.items():
    fn()
    dt = _time(fn, 2) / 2
    iters[key] = max(2, math.ceil(min_time / max(dt, 1e-6)))
  rates = {key: [] for key in runners}
  for _ in range(repeats):
    for key, fn in runners.items():
      rates[key].append(batch * iters[key] / _time(fn, iters[key]))
  med = {key: statistics.median(r) for key, r in rates.items()}
  best_torch = max((k for k in med if k != "jax"), key=med.get)
  return {"name": name, "params": n_jax, "jax": med["jax"], "torch": med[best_torch],
          "torch_threads": int(best_torch[5:]), "ratio": med["jax"] / med[best_torch],
          "all": med}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rungs", nargs="*", default=models.ladder("vit_tiny") + models.ladder("resnet_tiny"))
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--image-size", type=int, default=16)
  ap.add_argument("--num-classes", type=int, default=52)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--min-time", type=float, default=1.0, help="seconds per timed repeat")
  ap.add_argument("--torch-threads", type=int, nargs="+", default=None,
                  help="PyTorch intra-op thread counts to try (default: 1 and the default count)")
  args = ap.parse_args(argv)
  if torch is None:
    print("PyTorch is not installed: pip install torch (CPU build) to compare", file=sys.stderr)
    return 1
  threads = tuple(args.torch_threads or sorted({1, torch.get_num_threads()}))
  torch.manual_seed(0)
  print(f"# fwd+bwd images/s, batch {args.batch}, {args.image_size} px, {args.num_classes} classes, "
        f"median of {args.repeats} interleaved repeats; jax {jax.__version__} "
        f"({jax.devices()[0].platform}), torch {torch.__version__} (best of {threads} threads), "
        f"{os.cpu_count()} CPUs")
  print(f"{'rung':16s} {'params':>10s} {'jaxscale':>10s} {'pytorch':>10s} {'threads':>7s} {'ratio':>7s}")
  worst = math.inf
  for name in args.rungs:
    r = bench_rung(name, args.batch, args.image_size, args.num_classes, args.repeats, args.min_time,
                   threads)
    worst = min(worst, r["ratio"])
    print(f"{r['name']:16s} {r['params']:>10,d} {r['jax']:>10,.0f} {r['torch']:>10,.0f} "
          f"{r['torch_threads']:>7d} {r['ratio']:>7.2f}", flush=True)
  print(f"# lowest ratio jaxscale/pytorch: {worst:.2f} (goal >= 1.0)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
