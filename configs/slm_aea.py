"""The packaged config ferjax/configs/slm_aea.py, kept here for `--config=configs/slm_aea.py`."""

from ferjax.configs.slm_aea import get_config  # pylint: disable=unused-import
