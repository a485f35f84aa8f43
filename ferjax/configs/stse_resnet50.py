"""ST-SE ResNet-50 for pose-invariant FER (Liu et al., Visual Computer 2023).

Design decisions: docs/methods/stse.md. Variants (`--config=stse_resnet50:ARG`):
  rafdb (default)    RAF-DB, 7 classes, official test split;
  pose_rafdb         RAF-DB train, eval on test + RAN's pose >30 / >45 subsets;
  pose_affectnet     AffectNet (CSV release) 8 classes, eval on validation + pose subsets;
  bu3dfe             BU-3DFE, protocol=p1|p2, fold=1..5 (6 classes, no neutral);
  multipie           Multi-PIE native 6 classes, 7 poses, fold=1..5;
  synthetic          synthetic_fer/images_pose (uniform yaw), a CPU-sized
                     ResNet-18 with ST-SE at 64x64 for 5 epochs;
  smoke              ST-SE ResNet-18 on synthetic_fer/images_smoke, about a
                     minute on a CPU (`default.smoke`);
  plain              ST-SE off (the plain ResNet), same budget.
Real datasets use an assumed recipe (the paper's is unknown):
ImageNet ResNet-50 (`--config.init_from=<torchvision resnet50 .pth>`; the
ST-SE layers start fresh), 224 crops of 256 resizes, SGD 0.01 / momentum 0.9 /
wd 1e-4, batch 64, 60 epochs, lr x0.1 every 20 epochs. Datasets with head
pose metadata get per-yaw/pitch-bucket accuracy (`config.evals.pose`).
"""

import ml_collections

from ferjax.configs import default
from ferjax.config_args import parse_arg

DATASETS = ("rafdb", "pose_rafdb", "pose_affectnet", "bu3dfe", "multipie", "synthetic", "smoke")
# 15-degree buckets of signed yaw; BU-3DFE P1 views are 0..90 (|yaw| buckets
# whose edges sit between its views); Multi-PIE's 7 views 0, ±15, ±30, ±45.
YAW_15 = tuple(range(-90, 91, 15))
P1_VIEWS = (0.0, 15.0, 37.5, 52.5, 75.0, 90.0)
MULTIPIE_VIEWS = (-52.5, -37.5, -22.5, -7.5, 7.5, 22.5, 37.5, 52.5)


def _stse_fields(enabled: bool) -> ml_collections.ConfigDict:
  """config.model.stse: the switches of docs/methods/stse.md, 'Design decisions'."""
  stse = ml_collections.ConfigDict()
  stse.enabled = enabled             # False: plain ResNet
  stse.mode = "stse"                 # "stse" | "drsn_cw" (DRSN-CW parity) | "se" (plain SE)
  stse.gap_input = "abs_then_mean"   # g = GAP(|U|) | "mean_then_abs": g = |GAP(U)|
  stse.reduction = 16                # r: W1 is C -> C/r
  stse.excitation_bn = False         # BN after W1 (DRSN)
  stse.excitation_bias = False       # biased W1, W2
  stse.rescale = False               # Y = soft(U * s, tau) instead of soft(U, tau)
  stse.stages = (1, 2, 3, 4)         # ResNet stages whose blocks get ST-SE
  return stse


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ST-SE ResNet config for the dataset named in ARG."""
  args = parse_arg(arg, rafdb=False, pose_rafdb=False, pose_affectnet=False, bu3dfe=False,
                   multipie=False, synthetic=False, smoke=False, plain=False, protocol="p1", fold=1)
  chosen = [name for name in DATASETS if args[name]]
  if len(chosen) > 1:
    raise ValueError(f"configs/stse_resnet50.py: pick one dataset of {DATASETS}, got {chosen}")
  dataset = chosen[0] if chosen else "rafdb"
  if dataset in ("bu3dfe", "multipie") and args.fold not in range(1, 6):
    raise ValueError(f"configs/stse_resnet50.py: fold={args.fold} must be 1..5")
  if args.protocol not in ("p1", "p2"):
    raise ValueError(f"configs/stse_resnet50.py: protocol={args.protocol!r} must be p1 or p2")

  config = default.get_config()
  config.model.name = "stse_resnet"
  config.model.depth = 50
  config.model.stse = _stse_fields(enabled=not args.plain)

  config.input.image_size = 224
  config.input.resize_size = 256
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.01
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "step"
  config.schedule.step_epochs = 20
  config.schedule.decay_rate = 0.1
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 60
  config.checkpoint_every_steps = 1000
  config.input.worker_count = 8

  if dataset in ("rafdb", "pose_rafdb"):
    config.dataset.name = "rafdb"
    config.dataset.num_classes = 7
  if dataset == "pose_rafdb":
    config.dataset.extra_eval_splits = ("test_pose30", "test_pose45")
  if dataset == "pose_affectnet":
    config.dataset.name = "affectnet/csv"  # RAN's lists key CSV-release images; test = validation.csv
    config.dataset.num_classes = 8
    config.dataset.extra_eval_splits = ("test_pose30", "test_pose45")
  if dataset in ("bu3dfe", "multipie"):
    # k-fold builders keep every example in one split with `test_fold` (1..5).
    config.dataset.train_split = config.dataset.eval_split = "all_folds"
    config.dataset.fold = args.fold
  if dataset == "bu3dfe":
    config.dataset.name = f"bu3dfe/{args.protocol}"
    config.dataset.num_classes = 7   # canonical ids; the builder excludes neutral
    config.dataset.metadata = ("yaw", "pitch")
    # Accuracy per yaw/pitch bucket (edges in degrees).
    config.evals.pose = {"buckets": P1_VIEWS if args.protocol == "p1" else MULTIPIE_VIEWS}
  if dataset == "multipie":
    config.dataset.name = "multipie/pose7"
    config.dataset.num_classes = 6   # native labels: neutral smile surprise squint disgust scream
    config.dataset.metadata = ("yaw",)
    config.evals.pose = {"buckets": MULTIPIE_VIEWS}   # accuracy per yaw/pitch bucket (degrees)
  if dataset == "synthetic":
    # From scratch and CPU-sized (about 5 minutes on 2 cores): ResNet-18 (ST-SE
    # in all its basic blocks) on 64x64 crops of 72x72 resizes, batch 64, 5
    # epochs of AdamW, one evaluation at the end; yaw is uniform, so every
    # 15-degree bucket holds ~150 test images.
    config.dataset.name = "synthetic_fer/images_pose"
    config.dataset.num_classes = 7
    config.dataset.metadata = ("yaw", "pitch")
    config.evals.pose = {"buckets": YAW_15}   # accuracy per yaw/pitch bucket (degrees)
    config.model.depth = 18
    config.input.image_size = 64
    config.input.resize_size = 72
    config.input.worker_count = 0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.weight_decay = 1e-4
    config.schedule.name = "cosine"
    config.schedule.warmup_epochs = 0.2
    config.batch_size = 64
    config.eval_batch_size = 250
    config.num_epochs = 5
    config.eval_every_epochs = config.get_ref("num_epochs")
    config.log_every_steps = 25
    config.checkpoint_every_steps = 200
  if dataset == "smoke":
    default.smoke(config)
  return config
