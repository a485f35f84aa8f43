"""Defaults shared by every ferjax config; method configs override fields.

Every field is read by ferjax.train; `--config.a.b=value` overrides one with
type checking. Variants are chosen with `--config=configs/X.py:ARG`, where ARG
is a comma-separated list of `key=value` or bare words (big_vision style).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The baseline image-classification setup (ResNet-18, cross-entropy)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "synthetic_fer/images"   # TFDS name[/config][:version]
  config.dataset.data_dir = ""                   # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  config.dataset.kind = "image"                  # "image" | "clip"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.dataset.extra_eval_splits = ()          # e.g. pose/occlusion subsets
  config.dataset.num_classes = 7                 # 7 drops contempt from 8-class data
  config.dataset.label_key = "label"
  config.dataset.fold = 0                        # DFEW: 1..5 (0 = not fold-based)
  config.dataset.min_frames = 0                  # clips shorter than this are dropped
  config.dataset.metadata = ()                   # per-example fields kept for eval reports

  config.input = ml_collections.ConfigDict()
  config.input.image_size = 64                   # network input (crop) size
  config.input.resize_size = 72                  # resize before crop; eval: center crop
  config.input.train_crop = "random_crop"        # "random_crop" | "random_resized_crop" | "none"
  config.input.hflip = True
  config.input.gaussian_noise_var = 0.0          # pixel noise (uint8 scale) before resize, p=0.5
  config.input.random_erasing = 0.0              # probability of torchvision-style erasing
  config.input.erasing_scale = (0.02, 0.25)      # erased fraction of the crop's area
  config.input.mean = (0.485, 0.456, 0.406)      # on [0, 1] pixels
  config.input.std = (0.229, 0.224, 0.225)
  config.input.num_frames = 16                   # clips: frames per sample
  config.input.num_segments = 8                  # clips: segments x (num_frames/num_segments)
  config.input.worker_count = 0                  # Grain worker processes (0 = in-process)
  config.input.prefetch = 2                      # host batches prefetched per worker

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet"
  config.model.depth = 18
  config.model.dtype = "float32"                 # computation dtype; params stay float32
  config.init_from = ""                          # .pth or converted checkpoint to start from
  config.init_strict = False                     # True: every key must match (official weights)
  config.init_class_order = ""                   # LSTPNet .pth only: "dfew" | "canonical"
  config.train_drop_remainder = True             # False: pad + mask the last partial batch

  config.objective = ml_collections.ConfigDict()
  config.objective.name = "cross_entropy"
  config.objective.label_smoothing = 0.0

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"                  # "sgd" | "adam" | "adamw"
  config.optimizer.learning_rate = 0.1
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.weight_decay = 1e-4
  config.optimizer.grad_clip_norm = 0.0          # 0 = no clipping
  config.optimizer.no_decay = ()                 # parameter path names without weight decay
  config.optimizer.lr_multipliers = ml_collections.ConfigDict()  # path name -> lr factor

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = "cosine"  # "constant" | "cosine" | "step" | "exponential" | "slm_cosine"
  config.schedule.warmup_epochs = 0.0
  config.schedule.step_epochs = 20               # "step": multiply by decay_rate every N epochs
  config.schedule.decay_rate = 0.1
  config.schedule.min_learning_rate = 0.0

  config.batch_size = 64                         # global, over all processes and devices
  config.eval_batch_size = 128
  config.num_epochs = 10
  config.log_every_steps = 50                    # train scalars to TensorBoard, progress
  config.profile_steps = 0                       # >0: a profiler trace of this many steps
  config.profile_first_step = 10                 # ... from this step after a (re)start
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.best_metric = "war"
  config.eval_only = False
  config.eval_checkpoint = "latest"              # "latest" | "best"
  config.eval_pose_buckets = ()                  # yaw bucket edges (degrees) for a pose report
  config.eval_embeddings = False                 # embedding diagnostics + 2-D plot
  return config
