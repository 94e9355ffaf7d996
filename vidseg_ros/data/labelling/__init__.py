"""Sparse labels -> every frame: trackers, per-sequence propagation, the dataset-wide run."""
