"""Defaults shared by every ferjax config; method configs override fields.

Every field is read by ferjax.train; `--config.a.b=value` overrides one with
type checking. Variants are chosen with `--config=NAME:ARG` (or the file,
`--config=configs/NAME.py:ARG`), where ARG is a comma-separated list of
`key=value` or bare words (big_vision style). Every config's `smoke` variant
applies `smoke` below to its method.
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
  config.input.mixup_alpha = 0.0                 # Mixup lam ~ Beta(a, a) (0 = off); ferjax.mix
  config.input.cutmix_alpha = 0.0                # CutMix Beta(a, a) box (0 = off)
  config.input.mix_prob = 1.0                    # probability that a step's batch is mixed
  config.input.mix_switch_prob = 0.5             # P(CutMix) when both alphas are positive
  config.input.worker_count = 0                  # Grain worker processes (0 = in-process)
  config.input.prefetch = 2                      # host batches prefetched per worker

  config.model = ml_collections.ConfigDict()
  config.model.name = "resnet"
  config.model.depth = 18
  config.model.dtype = "float32"                 # computation dtype; params stay float32
  config.model.grad_dtype = "float32"            # "float32" | "compute": parameter gradients
                                                 # (and their all-reduce) of bfloat16 models
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
  config.optimizer.accumulate_steps = 1          # micro-batches (of batch_size) per update

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = "cosine"  # "constant" | "cosine" | "step" | "exponential" | "lagged_cosine"
  config.schedule.warmup_epochs = 0.0
  config.schedule.step_epochs = 20               # "step": multiply by decay_rate every N epochs
  config.schedule.decay_rate = 0.1
  config.schedule.min_learning_rate = 0.0

  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.0                         # weight EMA per update (0 = off); ferjax.ema

  config.batch_size = 64                         # global, over all processes and devices
  config.eval_batch_size = 128
  config.num_epochs = 10
  config.log_every_steps = 50                    # train scalars to TensorBoard, progress
  # False: no TensorBoard event files (scalars, hparams, the `tensorboard` evaluator's
  # images); the scalars go to the log only. TensorFlow's summary writer has its own
  # GCS client with a fixed endpoint: a gs:// workdir on a GCS emulator (or any
  # storage that client cannot reach) needs this off; docs/scaling.md.
  config.tensorboard = True
  config.profile_steps = 0                       # >0: a profiler trace of this many steps
  config.profile_first_step = 10                 # ... from this step after a (re)start
  config.eval_every_epochs = 1
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.best_metric = "war"
  config.eval_only = False
  config.eval_checkpoint = "latest"              # "latest" | "best"
  config.eval_ema = False                        # eval_only: evaluate the EMA weights
  # Evaluators (ferjax/evaluators) run at every evaluation; each entry maps a
  # name to its settings. `classification` gives the WAR/UAR that
  # rank checkpoints. Others: `pose` ({"buckets": yaw bucket edges in degrees},
  # needs dataset.metadata "yaw"), `embedding` ({}: geometry of `features` and a
  # 2-D plot), `tensorboard` ({"max_examples": N}: confusion matrix and N
  # misclassified examples as TensorBoard images), `aea` ({"shuffle_seeds":
  # (0, ..., 4)}: both AEA eval modes; needed
  # by model.aea, it stores the train-set feature mean in the model state).
  config.evals = ml_collections.ConfigDict({"classification": {},
                                            "tensorboard": {"max_examples": 16}})
  return config


def smoke(config: ml_collections.ConfigDict) -> None:
  """Shrinks an image config in place to its `:smoke` run, sized for a CPU minute (124 steps).

  The method's model and objective stay; the data, input size and budget shrink:
  synthetic_fer/images_smoke (32x32, 2000 train / 400 test, near-frontal,
  full-strength expressions; generated in seconds on first use), ResNet-18
  from scratch, 2 epochs of batch 32 with AdamW, one evaluation at the end.
  Measured: 71-76% WAR on 7 classes for resnet, stse_resnet50, msfe and
  slm_aea: a check that the method trains end to end, not a result.
  """
  config.dataset.name = "synthetic_fer/images_smoke"
  config.dataset.kind = "image"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.dataset.extra_eval_splits = ()
  config.dataset.num_classes = 7
  config.dataset.fold = 0
  config.dataset.min_frames = 0
  config.dataset.metadata = ()
  config.input.image_size = 32
  config.input.resize_size = 36
  config.input.train_crop = "random_crop"
  config.input.gaussian_noise_var = 0.0
  config.input.random_erasing = 0.0
  config.input.worker_count = 0
  config.model.depth = 18
  config.init_from = ""
  config.optimizer.name = "adamw"
  config.optimizer.learning_rate = 2e-3
  config.optimizer.weight_decay = 1e-4
  config.schedule.name = "cosine"
  config.schedule.warmup_epochs = 0.5
  config.batch_size = 32
  config.eval_batch_size = 200
  config.num_epochs = 2
  config.eval_every_epochs = 2
  for name in ("pose", "embedding"):   # No pose metadata; no plots in a minute's run.
    if name in config.evals:
      del config.evals[name]
  config.log_every_steps = 20
  config.checkpoint_every_steps = 1000
