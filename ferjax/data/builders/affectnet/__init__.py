"""AffectNet builder (`affectnet`, configs csv, csv_full, npy)."""

from ferjax.data.builders.affectnet.affectnet import Affectnet, AffectnetConfig
