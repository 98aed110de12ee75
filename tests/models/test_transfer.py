"""Tests for jaxscale.models.transfer: bit-identical backbones, fresh heads, ViT resolution change."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxscale.models as models
from jaxscale.models import transfer
from jaxscale.errors import JaxscaleError


def _flat(model_or_state):
  state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
  return {path: np.asarray(v.get_value()) for path, v in nnx.to_flat_state(state)}


def _pretrained(name, helpers, classes=52, size=16):
  """A model whose every parameter (head included) is perturbed, as if it had been trained."""
  model = models.create(name, classes, size, nnx.Rngs(0))
  rng = np.random.default_rng(7)
  state = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda v: jnp.asarray(np.asarray(v) + 0.1 * rng.standard_normal(v.shape, np.float32)), state))
  return model


@pytest.mark.parametrize("name", ["vit_tiny_xs", "resnet_tiny_xs"])
def test_backbone_bit_identical_and_head_reinitialised(name, helpers):
  pre = _pretrained(name, helpers)
  before = _flat(pre)
  new = models.with_new_head(pre, name, 10, 16, nnx.Rngs(1))
  after = _flat(new)
  # The source model is untouched.
  for path, value in _flat(pre).items():
    np.testing.assert_array_equal(value, before[path])
  assert set(after) == set(before)
  for path, value in after.items():
    if path[0] == "head":
      continue
    assert value.dtype == before[path].dtype
    np.testing.assert_array_equal(value, before[path], err_msg=str(path))
  # Fresh head for 10 classes: the new init (zeros), not the pretrained one.
  d = before[("head", "kernel")].shape[0]
  assert after[("head", "kernel")].shape == (d, 10) and after[("head", "bias")].shape == (10,)
  fresh = _flat(models.create(name, 10, 16, nnx.Rngs(1)))
  np.testing.assert_array_equal(after[("head", "kernel")], fresh[("head", "kernel")])
  assert np.abs(before[("head", "kernel")]).max() > 0
  # Same features as the pretrained model, 10 logits.
  x = helpers.images(4, 16)
  logits, feats = helpers.outputs(new, x)
  np.testing.assert_array_equal(np.asarray(feats), np.asarray(helpers.features(pre, x)))
  assert logits.shape == (4, 10)


def test_from_a_parameter_state_and_backbone_state(helpers):
  pre = _pretrained("resnet_tiny_xs", helpers)
  state = nnx.state(pre, nnx.Param)
  back = models.backbone_state(pre)
  assert not any(path[0] == "head" for path, _ in nnx.to_flat_state(back))
  assert len(jax.tree.leaves(back)) == len(jax.tree.leaves(state)) - 2
  new = models.with_new_head(state, "resnet_tiny_xs", 10, 16, nnx.Rngs(1))
  for path, value in _flat(back).items():
    np.testing.assert_array_equal(_flat(new)[path], value)


def test_vit_new_resolution_interpolates_position_embeddings(helpers):
  pre = _pretrained("vit_tiny_xs", helpers)
  before = _flat(pre)
  new = models.with_new_head(pre, "vit_tiny_xs", 10, 32, nnx.Rngs(1))
  after = _flat(new)
  assert after[("pos_embed",)].shape == (1, 64, models.spec("vit_tiny_xs").config.width)
  # The resized grid keeps the field: its mean and the corner values' ordering survive.
  np.testing.assert_allclose(after[("pos_embed",)].mean(axis=1), before[("pos_embed",)].mean(axis=1),
                             atol=0.05)
  for path, value in after.items():
    if path[0] not in ("head", "pos_embed"):
      np.testing.assert_array_equal(value, before[path])
  logits = helpers.logits(new, helpers.images(4, 32))
  assert logits.shape == (4, 10) and np.isfinite(np.asarray(logits)).all()


def test_mismatched_architecture_is_a_one_line_error(helpers):
  pre = models.create("vit_tiny_xs", 52, 16, nnx.Rngs(0))
  with pytest.raises(JaxscaleError) as e:
    models.with_new_head(pre, "vit_tiny_s", 10, 16, nnx.Rngs(1))
  assert "\n" not in str(e.value) and "vit_tiny_s" in str(e.value)
  with pytest.raises(JaxscaleError, match="at least 2 classes"):
    models.with_new_head(pre, "vit_tiny_xs", 1, 16, nnx.Rngs(1))


def test_keeps_or_sets_the_compute_dtype(helpers):
  pre = models.create("vit_tiny_xs", 52, 16, nnx.Rngs(0), dtype="bfloat16")
  assert models.with_new_head(pre, "vit_tiny_xs", 10, 16, nnx.Rngs(1)).dtype == jnp.bfloat16
  assert models.with_new_head(pre, "vit_tiny_xs", 10, 16, nnx.Rngs(1), dtype=jnp.float32).dtype == jnp.float32


@pytest.mark.parametrize("name", [n for lad in models.ladders() for n in models.ladder(lad)])
def test_zero_head_is_every_models_own_head_init(name):
  """A fine-tune's head starts at zero (transfer.zero_head, nothing random or compiled); that is the
  head each model's own initialiser gives, for any seed, so the two ways to start a fine-tune agree."""
  spec = models.spec(name)
  abstract = nnx.eval_shape(lambda: models.create(name, 7, spec.image_size, nnx.Rngs(0)))
  want = nnx.state(abstract, nnx.Param).to_pure_dict()
  zero = transfer.zero_head(want)
  assert jax.tree_util.tree_structure(zero) == jax.tree_util.tree_structure(want["head"])
  for seed in (0, 5):
    head = jax.jit(lambda: nnx.state(models.create(name, 7, spec.image_size, nnx.Rngs(seed)), nnx.Param)
                   .to_pure_dict()["head"])()
    for a, b in zip(jax.tree_util.tree_leaves(zero), jax.tree_util.tree_leaves(head)):
      assert a.shape == b.shape and a.dtype == b.dtype
      np.testing.assert_array_equal(a, np.asarray(b))
