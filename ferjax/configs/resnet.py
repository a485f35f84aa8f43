r"""Baseline ResNet classifier (cross-entropy) on images.

  python -m ferjax.main --config=resnet:smoke --workdir=/tmp/smoke     # ~1 min, CPU
  python -m ferjax.main --config=configs/resnet.py:synthetic --workdir=/tmp/run
  python -m ferjax.main --config=configs/resnet.py:rafdb,depth=50 --workdir=DIR \
      --config.init_from=/path/resnet50_imagenet

Variants (ARG, comma-separated): smoke | synthetic | rafdb | affectnet | ferplus |
sfew, depth=18|34|50, classes=7|8 (AffectNet/FERPlus).
"""

from ferjax.configs import default
from ferjax import config_args


def get_config(arg: str | None = None):
  """ResNet baseline; `synthetic` is the quickstart (CPU, a few minutes)."""
  arg = config_args.parse_arg(arg, smoke=False, synthetic=False, rafdb=False, affectnet=False,
                              ferplus=False, sfew=False, depth=18, classes=7)
  config = default.get_config()
  config.model.depth = arg.depth
  if arg.smoke:
    default.smoke(config)
    config.model.depth = arg.depth
    return config

  if arg.synthetic:
    config.dataset.name = "synthetic_fer/images"
    config.input.image_size = 64
    config.input.resize_size = 72
    config.batch_size = 64
    config.eval_batch_size = 256
    config.num_epochs = 6
    config.optimizer.learning_rate = 0.05
    config.optimizer.weight_decay = 5e-4
    config.schedule.warmup_epochs = 0.5
    config.checkpoint_every_steps = 200
    return config

  # Real datasets: torchvision ImageNet/MS-Celeb init via --config.init_from.
  config.input.image_size = 224
  config.input.resize_size = 256
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 40
  config.optimizer.learning_rate = 0.01
  config.checkpoint_every_steps = 1000
  config.input.worker_count = 8
  if arg.rafdb:
    config.dataset.name = "rafdb"
  elif arg.affectnet:
    config.dataset.name = "affectnet/csv"  # test = the official validation.csv
    config.dataset.num_classes = arg.classes
  elif arg.ferplus:
    config.dataset.name = "ferplus"
    config.dataset.num_classes = 8
  elif arg.sfew:
    config.dataset.name = "sfew"
    config.dataset.eval_split = "validation"
  else:
    raise ValueError("configs/resnet.py needs a dataset: :smoke, :synthetic, :rafdb, "
                     ":affectnet, :ferplus or :sfew")
  return config
