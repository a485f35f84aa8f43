"""SFEW 2.0 builder (`sfew`)."""

from ferjax.data.builders.sfew.sfew import Sfew
