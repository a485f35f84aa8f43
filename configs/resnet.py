"""The packaged config ferjax/configs/resnet.py, kept here for `--config=configs/resnet.py`."""

from ferjax.configs.resnet import get_config  # pylint: disable=unused-import
