"""TFDS builders; importing this package registers every ferjax dataset."""
from ferjax.data.builders import synthetic_fer
from ferjax.data.builders import afew
from ferjax.data.builders import affectnet
from ferjax.data.builders import bu3dfe
from ferjax.data.builders import dfew
from ferjax.data.builders import ferplus
from ferjax.data.builders import ferv39k
from ferjax.data.builders import multipie
from ferjax.data.builders import rafdb
from ferjax.data.builders import sfew
