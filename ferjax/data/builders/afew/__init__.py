"""AFEW builder (`afew`, configs official, lstpnet, former_dfer)."""

from ferjax.data.builders.afew.afew import Afew
