"""A scaling study: the grid of cells, the resumable runner and the records they produce."""
