"""MSFE: multiscale ResNet-18 + channel self-attention + center cosine loss.

Design decisions: docs/methods/msfe.md. Variants (`--config=msfe:ARG`):
  rafdb (default) | affectnet | affectnet,classes=8 | ferplus | synthetic
  smoke: synthetic_fer/images_smoke, about a minute on a CPU (`default.smoke`);
  ce:  plain cross-entropy instead of CE + center cosine loss, same budget;
  ran: also evaluate on RAN's pose >30 / >45 and occlusion test subsets
       (real datasets built with the RAN lists).
Real datasets follow an assumed recipe: ResNet-18 (start from the converted MS-Celeb-1M
checkpoint with `--config.init_from=...`), 224 crops of 256 resizes, Adam
1e-4 with L2 1e-4 (not on the centers), batch 64, 40 epochs, lr x0.9 per epoch.
"""

import ml_collections

from ferjax.configs import default
from ferjax.config_args import parse_arg

DATASETS = ("rafdb", "affectnet", "ferplus", "synthetic", "smoke")
DEFAULT_CLASSES = {"rafdb": 7, "affectnet": 7, "ferplus": 8, "synthetic": 7, "smoke": 7}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The MSFE config for the dataset named in ARG."""
  args = parse_arg(arg, rafdb=False, affectnet=False, ferplus=False, synthetic=False,
                   smoke=False, classes=0, ce=False, ran=False)
  chosen = [name for name in DATASETS if args[name]]
  if len(chosen) > 1:
    raise ValueError(f"configs/msfe.py: pick one dataset of {DATASETS}, got {chosen}")
  dataset = chosen[0] if chosen else "rafdb"
  num_classes = args.classes or DEFAULT_CLASSES[dataset]
  allowed = (7, 8) if dataset in ("affectnet", "ferplus") else (7,)
  if num_classes not in allowed:
    raise ValueError(f"configs/msfe.py: classes={num_classes} is not one of {allowed} "
                     f"for {dataset}")

  config = default.get_config()
  config.dataset.name = {"rafdb": "rafdb", "affectnet": "affectnet/csv",
                         "ferplus": "ferplus/label_csv_majority",
                         "synthetic": "synthetic_fer/images",
                         "smoke": "synthetic_fer/images_smoke"}[dataset]
  config.dataset.num_classes = num_classes
  if args.ran:
    if dataset in ("synthetic", "smoke"):
      raise ValueError("configs/msfe.py: ran needs a real dataset (rafdb, affectnet, ferplus)")
    config.dataset.extra_eval_splits = ("test_pose30", "test_pose45", "test_occlusion")
  config.input.image_size = 224
  config.input.resize_size = 256
  config.input.random_erasing = 0.5            # p 0.5, area 0.02-0.25; 0 = off

  config.model.name = "msfe"
  config.model.depth = 18
  config.model.msfe = ml_collections.ConfigDict()
  config.model.msfe.taps = (2, 3, 4)           # ResNet stages fused (F2, F3, F4)
  config.model.msfe.attention = "scaled"       # "scaled" | "danet" | "se" (SE, ratio below)
  config.model.msfe.reduction = 16             # SE ratio r for attention="se"
  config.model.msfe.branch_dim = 256           # D: channels of each 1x1 compression
  config.model.msfe.embed_dim = 512            # size of the embedding f

  config.objective.name = "cross_entropy" if args.ce else "center_cosine"
  config.objective.ccl = ml_collections.ConfigDict()
  config.objective.ccl.variant = "margin"      # "margin" (CosFace-style) | "intra_inter"
  config.objective.ccl.scale = 30.0            # s
  config.objective.ccl.margin = 0.35           # m
  config.objective.ccl.weight = 0.1            # lambda: L = CE + lambda * L_CCL
  config.objective.ccl.pull_weight = 0.0       # mu: extra mean(1 - cos(f, c_y)) term
  config.objective.ccl.inter_weight = 1.0      # gamma_c of the intra_inter variant
  config.objective.ccl.use_ce_head = True      # False: L = L_CCL, needs predict_with=centers
  config.objective.ccl.center_update = "grad"  # "grad" (optimised Param) | "ema"
  config.objective.ccl.center_lr_mult = 1.0    # "grad": learning-rate multiplier of centers
  config.objective.ccl.ema_rate = 0.5          # "ema": alpha
  config.objective.ccl.predict_with = "logits"  # "logits" | "centers" (argmax cos(f, c_j))

  config.optimizer.name = "adam"
  config.optimizer.learning_rate = 1e-4
  config.optimizer.weight_decay = 1e-4
  config.optimizer.no_decay = ("centers",)     # path names weight decay skips
  config.optimizer.lr_multipliers.centers = config.objective.ccl.get_ref("center_lr_mult")
  config.schedule.name = "exponential"
  config.schedule.decay_rate = 0.9             # lr x0.9 after every epoch
  config.batch_size = 64
  config.num_epochs = 40

  config.evals.embedding = {}                  # intra/inter-class cosine + 2-D plot at eval

  if dataset == "synthetic":
    # From scratch and CPU-sized: 64x64 crops of the faces resized to 72, four
    # epochs (500 steps), a few minutes on a laptop CPU.
    config.input.image_size = 64
    config.input.resize_size = 72
    config.input.random_erasing = 0.0
    config.optimizer.learning_rate = 1e-3
    config.num_epochs = 4
    config.eval_batch_size = 250
    config.log_every_steps = 25
  if dataset == "smoke":
    default.smoke(config)
  return config
