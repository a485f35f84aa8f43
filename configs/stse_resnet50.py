"""The packaged config ferjax/configs/stse_resnet50.py, kept here for `--config=configs/stse_resnet50.py`."""

from ferjax.configs.stse_resnet50 import get_config  # pylint: disable=unused-import
