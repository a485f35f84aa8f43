"""RAF-DB builder (`rafdb`)."""

from ferjax.data.builders.rafdb.rafdb import Rafdb, native_to_canonical
