"""Datasets (TFDS builders) and Grain input pipelines."""
