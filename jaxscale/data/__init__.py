"""Data: embedded tfds datasets, tfds sources, nested class-balanced subsets, grain pipelines.

Modules: `sources` (open a prepared dataset by name), `subsets` (nested, balanced index sets),
`pipeline` (grain train/eval iterators), `augment` (per-example image ops), `builders` (the
embedded `jaxscale_glyphs` and `jaxscale_digits` tfds builders and `ensure_built`).
"""
