"""The packaged config ferjax/configs/lstpnet.py, kept here for `--config=configs/lstpnet.py`."""

from ferjax.configs.lstpnet import get_config  # pylint: disable=unused-import
