r"""Soft label mining + average expression anchoring (Ming et al., ACCV 2022).

Design: docs/methods/slm_aea.md; the official code's recipe (RAF-DB only):
ImageNet ResNet-18 (`--config.init_from=<torchvision resnet18 .pth>`), batch
72, 40 epochs, Adam 1e-3 without weight decay, the reference cosine schedule
(`lagged_cosine`), Gaussian pixel noise (variance 30, p=0.5) before a 256 resize,
random 224 crop, flip, (x-0.5)/0.5; eval: 256 resize, 224 center crop, batch 72
in file order. The last train batch of each epoch is kept (padded, masked).

  python -m ferjax.main --config=configs/slm_aea.py:rafdb --workdir=DIR \
      --config.init_from=/path/resnet18-f37072fd.pth
  python -m ferjax.main --config=configs/slm_aea.py:synthetic --workdir=/tmp/slm
  python -m ferjax.main --config=slm_aea:smoke --workdir=/tmp/slm_smoke   # ~1 min

Variants (ARG, comma-separated):
  rafdb | affectnet | sfew | synthetic   the dataset (AffectNet and SFEW are not
                     in the official code: the RAF-DB recipe is carried over);
  smoke              synthetic_fer/images_smoke (clean labels), about a minute
                     on a CPU (`default.smoke`);
  classes=7|8        AffectNet's label space (default 8);
  backbone=resnet|stse_resnet|msfe, depth=18|34|50   AEA goes on any backbone;
  aea=false          SLM alone (plain ResNet head);
  slm=false          AEA alone (hard-label cross-entropy);
  ce                 the baseline: cross-entropy, no AEA, same budget.
AEA evaluation (`model.aea.eval_mode`, both reported at the end of training):
`code_faithful` (alias `batch_official`: mean of each eval batch, file order)
and `batch_independent` (alias `fixed_mean`: train-set mean of the pooled
features, per-image predictions; the headline number).
"""

import ml_collections

from ferjax.configs import default
from ferjax.config_args import parse_arg

DATASETS = ("rafdb", "affectnet", "sfew", "synthetic", "smoke")
BACKBONES = ("resnet", "stse_resnet", "msfe")


def _stse_fields() -> ml_collections.ConfigDict:
  """ST-SE in every block of every stage (configs/stse_resnet50.py has the switches)."""
  from ferjax.configs import stse_resnet50  # pylint: disable=g-import-not-at-top
  return stse_resnet50.get_config("synthetic").model.stse


def _msfe_fields() -> ml_collections.ConfigDict:
  from ferjax.configs import msfe  # pylint: disable=g-import-not-at-top
  return msfe.get_config("synthetic").model.msfe


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """SLM-AEA for the dataset named in ARG (see the module docstring)."""
  args = parse_arg(arg, rafdb=False, affectnet=False, sfew=False, synthetic=False,
                   smoke=False, classes=8, backbone="resnet", depth=18, aea=True, slm=True, ce=False)
  chosen = [name for name in DATASETS if args[name]]
  if len(chosen) != 1:
    raise ValueError(f"configs/slm_aea.py: pick one dataset of {DATASETS}, got {chosen or 'none'}")
  if args.backbone not in BACKBONES:
    raise ValueError(f"configs/slm_aea.py: backbone={args.backbone!r} is not one of {BACKBONES}")
  if args.classes not in (7, 8):
    raise ValueError(f"configs/slm_aea.py: classes={args.classes} must be 7 or 8")
  dataset = chosen[0]

  config = default.get_config()
  config.model.name = args.backbone
  config.model.depth = args.depth
  if args.backbone == "stse_resnet":
    config.model.stse = _stse_fields()
  if args.backbone == "msfe":
    config.model.msfe = _msfe_fields()
  config.model.aea = ml_collections.ConfigDict()
  config.model.aea.enabled = args.aea and not args.ce
  config.model.aea.eval_mode = "batch_independent"   # | "code_faithful" (docs/methods/slm_aea.md)
  if config.model.aea.enabled:
    config.evals.aea = {"shuffle_seeds": (0, 1, 2, 3, 4)}   # reports every eval mode

  if args.slm and not args.ce:
    config.objective.name = "soft_label_mining"
    config.objective.k = 5.0            # logit scale of the initial table
    config.objective.p = 0.97           # initial soft-label mass on the annotated class
    config.objective.lam = 200.0        # label step; the per-sample step is lam / B
    config.objective.alpha = 1.6        # ramps: u(0) = exp(-alpha^2), jump at beta epochs
    config.objective.beta = 7           # epoch where u reaches 1 and d starts to decay
    config.objective.steps_per_epoch = 0   # 0 = the loop's ceil(N / batch_size)
    config.objective.export_soft_labels = True   # workdir/soft_labels.{npz,csv} at the end

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.weight_decay = 0.0
  config.schedule.name = "lagged_cosine"
  config.schedule.min_learning_rate = 1e-6
  config.batch_size = 72
  config.eval_batch_size = 72
  config.train_drop_remainder = False   # keep the partial last batch (n_s = ceil(N/B))
  config.num_epochs = 40

  config.input.image_size = 224
  config.input.resize_size = 256
  config.input.gaussian_noise_var = 30.0
  config.input.mean = (0.5, 0.5, 0.5)
  config.input.std = (0.5, 0.5, 0.5)
  config.input.worker_count = 8

  if dataset == "rafdb":
    config.dataset.name = "rafdb"
  elif dataset == "affectnet":
    config.dataset.name = "affectnet/csv"
    config.dataset.eval_split = "validation"
    config.dataset.num_classes = args.classes
  elif dataset == "sfew":
    config.dataset.name = "sfew"
    config.dataset.eval_split = "validation"
  elif dataset == "smoke":
    default.smoke(config)
    if config.objective.name == "soft_label_mining":
      config.objective.beta = 1   # the ramps' jump, scaled to the 2 epochs
  else:
    # 30% of the training labels flipped; test labels are clean. From scratch
    # and CPU-sized (about 5 minutes on 2 cores): 64x64 crops of 72x72
    # resizes, 6 epochs, the ramps' beta scaled to the budget, evaluation only
    # after the last epoch.
    config.dataset.name = "synthetic_fer/images_noisy"
    config.input.image_size = 64
    config.input.resize_size = 72
    config.input.worker_count = 0
    config.batch_size = 64
    config.eval_batch_size = 250
    config.num_epochs = 6
    config.eval_every_epochs = config.get_ref("num_epochs")
    config.log_every_steps = 25
    if config.objective.name == "soft_label_mining":
      config.objective.beta = 2
  return config
