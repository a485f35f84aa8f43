"""FERV39k builder (`ferv39k`, configs official, lstpnet, former_dfer)."""

from ferjax.data.builders.ferv39k.ferv39k import Ferv39k
