"""Synthetic FER builder (`synthetic_fer`)."""

from ferjax.data.builders.synthetic_fer.synthetic_fer import SyntheticFer, SyntheticFerConfig
