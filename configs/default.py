"""The packaged config ferjax/configs/default.py, kept here for `--config=configs/default.py`."""

from ferjax.configs.default import get_config  # pylint: disable=unused-import
