"""benchmarks/bench_floor.py: the matmuls it finds in the engine's train program are the model's, and
its matmul-only program keeps every one of them inside the step loop."""

import dataclasses
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_floor  # noqa: E402

from jaxscale import models  # noqa: E402

NAME, BATCH, RUNS, K = "vit_tiny_xxs", 8, 2, 2


@pytest.fixture(scope="module")
def traced():
  """(matmuls, mesh) of the engine's train program for vit_tiny_xxs, 2 runs, batch 8, K = 2."""
  _, _, matmuls, mesh = bench_floor.engine_program(NAME, BATCH, RUNS, K)
  return matmuls, mesh


def hand_counted():
  """(matmul ops per run and step, their FLOPs per image) from the ViT's dimensions.

  Forward: patch embedding, per block q/k/v, scores, mixing, output projection, fc1, fc2, then the
  head: 2 + 6 * depth ops. Backward: two per op (input and weight gradients) except the patch
  embedding (the images are not differentiated): 2 * (forward - 1) + 1. FLOPs: 3 x the forward's
  multiply-adds x 2, less the patch embedding's input gradient."""
  cfg = models.spec(NAME).config
  n, d, m, p, c = (16 // cfg.patch_size) ** 2, cfg.width, cfg.mlp_dim, cfg.patch_size, 52
  patch = n * p * p * 3 * d
  block = n * d * 3 * d + n * n * d + n * n * d + n * d * d + n * d * m + n * m * d
  forward = patch + cfg.depth * block + d * c
  ops = 2 + 6 * cfg.depth
  return ops + 2 * (ops - 1) + 1, 2.0 * (3 * forward - patch)


def test_every_matmul_of_a_step_is_found_with_its_count(traced):
  matmuls, mesh = traced
  ops, flops_per_image = hand_counted()
  assert len(matmuls) == ops == 41
  assert all(mm.count == RUNS and mm.primitive.name == "dot_general" for mm in matmuls)
  assert mesh is not None and all(mm.devices == mesh.size for mm in matmuls)
  total = sum(mm.flops * mm.count for mm in matmuls)
  assert total == pytest.approx(flops_per_image * BATCH * RUNS, rel=1e-12)
  # the model's own count (3 x forward) is the same less the patch embedding's input gradient
  model = 3 * models.flops_per_image(NAME, 52, 16) * BATCH * RUNS
  assert 0.95 < total / model < 1.0


def test_the_shapes_are_the_models(traced):
  matmuls, _ = traced
  cfg = models.spec(NAME).config
  n, d, h = 16, cfg.width, cfg.num_heads
  shapes = [(mm.lhs.shape, mm.rhs.shape, mm.out_shape) for mm in matmuls]
  assert shapes.count(((BATCH, n, d), (d, 3 * d), (BATCH, n, 3 * d))) == cfg.depth       # q/k/v forward
  assert shapes.count(((BATCH, n, d), (d, cfg.mlp_dim), (BATCH, n, cfg.mlp_dim))) == cfg.depth   # fc1
  scores = [mm for mm in matmuls if mm.out_shape == (BATCH, h, n, n)]
  assert scores and all(mm.params["dimension_numbers"][1] != ((), ()) for mm in scores)  # per-head batch dims
  assert shapes.count(((BATCH, d), (d, 52), (BATCH, 52))) == 1                             # the head


def _innermost_loop_dots(hlo: str) -> tuple[int, int]:
  """(dot ops reachable from an innermost while body, all dot ops) of compiled HLO text."""
  comps = {}
  for block in re.split(r"\n(?=%|ENTRY )", hlo):
    head = re.match(r"(?:ENTRY )?%?([\w.\-]+)", block)
    if head:
      comps[head.group(1)] = block
  calls = {name: set(re.findall(r"(?:calls|body|condition|to_apply)=%([\w.\-]+)", text))
           for name, text in comps.items()}

  def reach(name, seen):
    if name not in seen:
      seen.add(name)
      for callee in calls.get(name, ()):
        reach(callee, seen)
    return seen

  bodies = {b for text in comps.values() for b in re.findall(r" while\(.*?body=%([\w.\-]+)", text)}
  innermost = [b for b in bodies if not any(" while(" in comps.get(c, "") for c in reach(b, set()))]
  inside = set().union(*(reach(b, set()) for b in innermost)) if innermost else set()
  count = lambda names: sum(len(re.findall(r" dot\(", comps.get(c, ""))) for c in names)
  return count(inside), count(comps)


def test_the_matmul_only_program_runs_every_op_in_the_step_loop(traced, monkeypatch):
  matmuls, mesh = traced
  _, _, program, operands = bench_floor.make_floor(matmuls, mesh, K)
  out = program(operands)
  assert out.shape == (RUNS,) and bool(jnp.all(jnp.isfinite(out)))
  assert _innermost_loop_dots(program.lower(operands).compile().as_text()) == (41, 41)

  # the check can fail: with loop-invariant operands XLA moves the matmuls out of the step loop
  def invariant(mms, k, ops):
    def step(c, _):
      return c + sum(jnp.sum(mm.primitive.bind(a, b, **mm.params)) for mm, (a, b) in zip(mms, ops)), None
    return jax.lax.scan(step, jnp.zeros((), jnp.float32), None, length=k)[0]
  monkeypatch.setattr(bench_floor, "_one_run", invariant)
  _, _, hoisted, ops = bench_floor.make_floor(matmuls, mesh, K)
  inside, total = _innermost_loop_dots(hoisted.lower(ops).compile().as_text())
  assert total == 41 and inside < total


def test_a_step_without_a_whole_number_of_runs_per_device_is_refused(traced):
  matmuls, _ = traced
  odd = [dataclasses.replace(matmuls[0], count=1.5)] + matmuls[1:]
  with pytest.raises(ValueError, match="per device"):
    bench_floor.runs_per_device(odd)
  assert bench_floor.runs_per_device(matmuls) == RUNS // matmuls[0].devices


def test_scans_multiply_counts_and_a_vmap_shows_as_batch_dims():
  def program(x, w):
    def step(c, _):
      y = jax.vmap(lambda xi: jax.jit(jnp.dot)(xi, w))(x)      # 5 x ([4, 3] @ [3, 2])
      return c + y.sum(), None
    return jax.lax.scan(lambda c, _: jax.lax.scan(step, c, None, length=2), 0.0, None, length=3)[0]
  closed = jax.make_jaxpr(program)(jnp.ones((5, 4, 3)), jnp.ones((3, 2)))
  (mm,), mesh = bench_floor.extract(closed, k=2)
  assert mesh is None and mm.count == 3 and mm.devices == 1
  assert mm.lhs.shape == (5, 4, 3) and mm.out_shape == (5, 4, 2) and mm.flops == 2 * 5 * 4 * 2 * 3
  with pytest.raises(ValueError, match="multiple of K"):
    bench_floor.extract(closed, k=4)
