"""The packaged config ferjax/configs/msfe.py, kept here for `--config=configs/msfe.py`."""

from ferjax.configs.msfe import get_config  # pylint: disable=unused-import
