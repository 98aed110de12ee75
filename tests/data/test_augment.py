"""Batch image ops: counter-based uniforms, resize, crop, flip, normalisation."""

import numpy as np

from jaxscale.data import augment


def test_uniforms_depend_only_on_seed_and_position():
  u = augment.uniforms(5, np.array([0, 1, 2, 3]), 3)
  assert u.shape == (4, 3) and (u >= 0).all() and (u < 1).all()
  np.testing.assert_array_equal(augment.uniforms(5, np.array([2]), 3), u[2:3])
  assert not np.array_equal(augment.uniforms(6, np.array([2]), 3), u[2:3])
  big = augment.uniforms(0, np.arange(20000), 1)
  assert abs(big.mean() - 0.5) < 0.01


def test_square_resize_crops_the_centre_then_resizes():
  image = np.zeros((20, 10, 3), np.uint8)
  image[5:15] = 200
  out = augment.square_resize(image, 16)
  assert out.shape == (16, 16, 3) and out.min() == 200


def test_random_crop_shifts_within_padding():
  images = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
  np.testing.assert_array_equal(augment.random_crop(images, 0, np.zeros(2), np.zeros(2)), images)
  centre = augment.random_crop(images, 2, np.full(2, 0.5), np.full(2, 0.5))
  np.testing.assert_array_equal(centre, images)
  shifted = augment.random_crop(images, 2, np.full(2, 0.99), np.zeros(2))
  np.testing.assert_array_equal(shifted[:, :6, 2:], images[:, 2:, :6])


def test_flip_and_normalize():
  images = np.arange(4 * 4, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(2, axis=0)
  flipped = augment.flip(images, np.array([True, False]))
  np.testing.assert_array_equal(flipped[0], images[0, :, ::-1])
  np.testing.assert_array_equal(flipped[1], images[1])
  x = augment.normalize(np.array([[[[0], [255]]]], np.uint8))
  assert x.dtype == np.float32 and x.shape == (1, 1, 2, 3)
  np.testing.assert_allclose(x[0, 0, :, 0], [-1.0, 1.0])
