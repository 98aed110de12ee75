"""Image ops: host resizing, and the device augmentation (uniforms by position, crop, flip, normalise)."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.data import augment

KEY = np.asarray(jax.random.key_data(jax.random.key(5)))


def test_uniforms_depend_only_on_key_and_position():
  u = np.asarray(augment.example_uniforms(KEY, jnp.arange(4), 3))
  assert u.shape == (4, 3) and (u >= 0).all() and (u < 1).all()
  np.testing.assert_array_equal(np.asarray(augment.example_uniforms(KEY, jnp.array([2]), 3)), u[2:3])
  other = np.asarray(jax.random.key_data(jax.random.key(6)))
  assert not np.array_equal(np.asarray(augment.example_uniforms(other, jnp.array([2]), 3)), u[2:3])
  big = np.asarray(augment.example_uniforms(KEY, jnp.arange(20000), 1))
  assert abs(big.mean() - 0.5) < 0.01


def test_square_resize_crops_the_centre_then_resizes():
  image = np.zeros((20, 10, 3), np.uint8)
  image[5:15] = 200
  out = augment.square_resize(image, 16)
  assert out.shape == (16, 16, 3) and out.min() == 200
  assert augment.stack_square([np.zeros((8, 8, 1), np.uint8), np.zeros((8, 8, 3), np.uint8)], 8).shape == (2, 8, 8, 3)


def test_random_crop_shifts_within_padding():
  images = jnp.arange(2 * 8 * 8, dtype=jnp.uint8).reshape(2, 8, 8, 1)
  np.testing.assert_array_equal(augment.random_crop(images, 0, jnp.zeros(2), jnp.zeros(2)), images)
  centre = augment.random_crop(images, 2, jnp.full(2, 0.5), jnp.full(2, 0.5))
  np.testing.assert_array_equal(centre, images)
  shifted = np.asarray(augment.random_crop(images, 2, jnp.full(2, 0.99), jnp.zeros(2)))
  np.testing.assert_array_equal(shifted[:, :6, 2:], np.asarray(images)[:, 2:, :6])


def test_flip_normalize_and_train_augment():
  images = jnp.arange(4 * 4, dtype=jnp.uint8).reshape(1, 4, 4, 1).repeat(2, axis=0)
  flipped = np.asarray(augment.flip(images, jnp.array([True, False])))
  np.testing.assert_array_equal(flipped[0], np.asarray(images)[0, :, ::-1])
  np.testing.assert_array_equal(flipped[1], np.asarray(images)[1])
  x = np.asarray(augment.normalize(jnp.array([[[[0], [255]]]], jnp.uint8)))
  assert x.dtype == np.float32 and x.shape == (1, 1, 2, 3)
  np.testing.assert_allclose(x[0, 0, :, 0], [-1.0, 1.0])
  out = augment.train_augment(images, KEY, jnp.arange(2), crop_padding=1, flip_ok=True)
  again = augment.train_augment(images, KEY, jnp.arange(2), crop_padding=1, flip_ok=True)
  assert out.shape == (2, 4, 4, 3) and np.array_equal(out, again)


def test_random_resized_crop_box_and_identity():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(-1, 1, (3, 16, 16, 3)).astype(np.float32))
  whole = jnp.array([[1.0, 0.5, 0.0, 0.0]] * 3)   # the whole area, aspect 1: the identity
  np.testing.assert_allclose(augment.random_resized_crop(x, whole), x, atol=1e-5)
  # The top-left quarter (area 1/4, aspect 1) is stretched to the whole image: its corner pixel moves
  # nowhere and its value range is the quarter's.
  u0 = (0.25 - augment.RRC_AREA[0]) / (augment.RRC_AREA[1] - augment.RRC_AREA[0])
  quarter = augment.random_resized_crop(x, jnp.array([[u0, 0.5, 0.0, 0.0]] * 3))
  assert quarter.shape == x.shape
  np.testing.assert_allclose(quarter[:, 0, 0], x[:, 0, 0], atol=1e-5)
  assert not np.allclose(quarter, x, atol=1e-2)
  out = augment.train_augment(jnp.zeros((2, 16, 16, 1), jnp.uint8) + 7, KEY, jnp.arange(2), crop_padding=0,
                              flip_ok=False, resized_crop=True)
  assert out.shape == (2, 16, 16, 3)
  np.testing.assert_allclose(out, 7 * 2 / 255 - 1, atol=1e-5)  # a constant image stays constant
