r"""Generation speed of the synthetic FER dataset.

  python -m ferjax.data.synthetic.benchmark [--configs=images,clips] [--num=400] [--workers=0,2]

For each config and worker count, generates the first `--num` training
examples (rendered and encoded, as the builder writes them) and prints
examples/s and images/s (a clip counts its frames). Worker counts > 0 include
the start-up of the spawned processes.
"""

import time

from absl import app, flags

from ferjax.data.synthetic import generate
from ferjax.data.synthetic.config import CONFIGS

_CONFIGS = flags.DEFINE_list("configs", ["images", "clips"], "Configs to time.")
_NUM = flags.DEFINE_integer("num", 400, "Examples per measurement (clips: / num_frames).")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Worker process counts to time.")


def measure(config_name: str, num: int, workers: int) -> tuple[float, float]:
  """(examples/s, images/s) of generating `num` training examples."""
  cfg = CONFIGS[config_name]
  start = time.perf_counter()
  n = sum(1 for _ in generate.generate(cfg, "train", num_workers=workers,
                                       indices=range(min(num, cfg.num_train))))
  seconds = time.perf_counter() - start
  frames = cfg.num_frames if cfg.kind == "clips" else 1
  return n / seconds, n * frames / seconds


def main(argv):
  del argv
  for name in _CONFIGS.value:
    if name not in CONFIGS:
      raise app.UsageError(f"--configs: unknown config {name!r}; known: {', '.join(CONFIGS)}")
    cfg = CONFIGS[name]
    num = _NUM.value // cfg.num_frames if cfg.kind == "clips" else _NUM.value
    for workers in (int(w) for w in _WORKERS.value):
      per_s, images_s = measure(name, max(num, 1), workers)
      unit = "clips" if cfg.kind == "clips" else "images"
      print(f"{name} ({cfg.image_size}px, {unit}) workers={workers}: {per_s:,.1f} {unit}/s, "
            f"{images_s:,.1f} images/s")


if __name__ == "__main__":
  app.run(main)
