"""Multi-PIE builder (`multipie`, configs pose7, pose13)."""

from ferjax.data.builders.multipie.multipie import Multipie, MultipieConfig, camera_yaw
