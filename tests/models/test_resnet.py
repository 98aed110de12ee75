"""Tests for jaxscale.models.resnet: weight standardisation, groups, both stems and units, bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxscale.models as models
from jaxscale.errors import JaxscaleError
from jaxscale.models import resnet


def test_standardize_gives_zero_mean_unit_variance_per_output_channel():
  w = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (3, 3, 8, 5))
  s = resnet.standardize(w)
  np.testing.assert_allclose(s.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
  np.testing.assert_allclose(s.var(axis=(0, 1, 2)), 1.0, rtol=1e-4)


@pytest.mark.parametrize("c", [12, 20, 24, 40, 48, 64, 80, 96, 144, 256, 400, 2048])
def test_num_groups_divides_channels(c):
  g = resnet.num_groups(c)
  assert c % g == 0 and c // g >= 2 and g <= 32
  if c % 32 == 0 and c >= 64:
    assert g == 32


@pytest.mark.parametrize("size", [16, 32])
def test_tiny_forward_runs(helpers, size):
  model = models.create("resnet_tiny_xs", 5, size, nnx.Rngs(0))
  helpers.randomize_head(model)
  x = helpers.images(4, size)
  logits = helpers.logits(model, x)
  assert logits.shape == (4, 5) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all() and not np.allclose(logits[0], logits[1])
  # GroupNorm has no batch statistics: one image alone gives the same logits as in a batch.
  np.testing.assert_allclose(helpers.logits(model, x[:1]), logits[:1], rtol=1e-4, atol=1e-5)


def test_imagenet_stem_bottleneck_network(helpers):
  cfg = resnet.ResNetConfig(width=8, blocks=(1, 1), bottleneck=True, stem="imagenet")
  model = resnet.ResNet(cfg, 3, 32, rngs=nnx.Rngs(0))
  helpers.randomize_head(model)
  logits, feats = helpers.outputs(model, helpers.images(4, 32))
  assert feats.shape == (4, 4 * 16) and logits.shape == (4, 3)
  assert model.units[0].proj is not None and model.units[1].conv2.stride == 2


def test_too_small_image_is_an_error():
  cfg = resnet.ResNetConfig(width=8, blocks=(1, 1, 1, 1), bottleneck=True, stem="imagenet")
  with pytest.raises(JaxscaleError, match="at least 32 px"):
    resnet.check_image_size(cfg, 16, "x")
