"""Tests for jaxscale.models.vit: forward pass, pooling variants, patches, pos-emb resizing, bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxscale.models as models
from jaxscale.errors import JaxscaleError
from jaxscale.models import vit


@pytest.mark.parametrize("size", [16, 32])
def test_forward_runs_and_depends_on_input(helpers, size):
  model = models.create("vit_tiny_xs", 5, size, nnx.Rngs(0))
  helpers.randomize_head(model)
  x = helpers.images(4, size)
  logits, feats = helpers.outputs(model, x)
  assert logits.shape == (4, 5) and logits.dtype == jnp.float32 and feats.shape == (4, models.spec("vit_tiny_xs").config.width)
  assert np.isfinite(np.asarray(logits)).all()
  # Different images give different logits; logits are the head applied to the features.
  assert not np.allclose(logits[0], logits[1])
  np.testing.assert_allclose(feats @ model.head.kernel[...] + model.head.bias[...], logits,
                             rtol=1e-5, atol=1e-5)


def test_fresh_head_predicts_uniform(helpers):
  model = models.create("vit_tiny_xs", 5, 16, nnx.Rngs(0))
  np.testing.assert_array_equal(np.asarray(helpers.logits(model, helpers.images(4, 16))), 0.0)


def test_class_token_pool(helpers):
  cfg = vit.ViTConfig(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=4, pool="token")
  model = vit.ViT(cfg, 4, 16, rngs=nnx.Rngs(0))
  helpers.randomize_head(model)
  assert model.pos_embed.shape == (1, 16, 32) and model.cls_token.shape == (1, 1, 32)
  assert helpers.logits(model, helpers.images(4, 16)).shape == (4, 4)
  assert vit.flops(cfg, 4, 16) > vit.flops(dataclasses_replace(cfg, pool="gap"), 4, 16)


def dataclasses_replace(cfg, **kw):
  import dataclasses
  return dataclasses.replace(cfg, **kw)


def test_patchify_orders_patches_row_major():
  x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
  p = vit.patchify(x, 4)
  assert p.shape == (2, 4, 48)
  np.testing.assert_array_equal(p[1, 1], x[1, 0:4, 4:8].reshape(-1))   # top-right patch
  np.testing.assert_array_equal(p[0, 2], x[0, 4:8, 0:4].reshape(-1))   # bottom-left patch


def test_wrong_input_size_is_a_one_line_error(helpers):
  model = models.create("vit_tiny_xs", 5, 16, nnx.Rngs(0))
  with pytest.raises(JaxscaleError, match="16, 16, 3") as e:
    model(helpers.images(1, 32))
  assert "\n" not in str(e.value)


def test_interpolate_pos_embed():
  pos = jax.random.normal(jax.random.key(0), (1, 16, 8))
  assert vit.interpolate_pos_embed(pos, 4) is pos
  up = vit.interpolate_pos_embed(pos, 8)
  assert up.shape == (1, 64, 8) and up.dtype == pos.dtype
  # A constant field stays constant; a linear ramp stays monotone along its axis.
  const = jnp.full((1, 16, 3), 0.7)
  np.testing.assert_allclose(vit.interpolate_pos_embed(const, 8), 0.7, rtol=1e-6)
  ramp = jnp.tile(jnp.arange(4.0)[None, :, None], (4, 1, 1)).reshape(1, 16, 1)
  row = vit.interpolate_pos_embed(ramp, 8).reshape(8, 8)[3]
  assert np.all(np.diff(np.asarray(row)) >= 0) and row[-1] > row[0]
  down = vit.interpolate_pos_embed(up, 4)
  assert down.shape == pos.shape
