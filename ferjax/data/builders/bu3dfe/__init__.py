"""BU-3DFE builder (`bu3dfe`, configs p1, p2)."""

from ferjax.data.builders.bu3dfe.bu3dfe import Bu3dfe, Bu3dfeConfig
