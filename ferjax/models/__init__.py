"""Flax NNX models: backbones, attention blocks and FER heads."""
