r"""Previews of the synthetic FER dataset.

  python -m ferjax.data.synthetic.preview contact_sheet --out=sheet.png [--config=images]
  python -m ferjax.data.synthetic.preview samples --out=samples.png [--config=images_pose]
  python -m ferjax.data.synthetic.preview clip --out=clip.gif [--config=clips]

contact_sheet: rows = classes; columns = yaw from -90 to 90 at full intensity,
then frontal faces at three intensities (lowest of the config's range, middle,
1), one test identity per column, no occluder.
samples: the first test examples of each class exactly as the dataset stores
them (pose, blends, occluders, noise), one row per class.
clip: one test clip per class; `.gif` plays them side by side, any other
extension writes a frame strip (rows = classes, columns = frames).
"""

import io

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw

from ferjax.data import labels
from ferjax.data.synthetic import expressions, generate, render
from ferjax.data.synthetic.config import CONFIGS

_OUT = flags.DEFINE_string("out", None, "Output image path (.png, or .gif for clip).")
_CONFIG = flags.DEFINE_enum("config", None, list(CONFIGS), "Builder config (default: images, "
                            "or clips for the clip command).")
_SCALE = flags.DEFINE_integer("scale", 2, "Nearest-neighbour upscaling of every cell.")
_COLUMNS = flags.DEFINE_integer("columns", 10, "Examples per class (samples).")
_YAWS = (-90, -60, -30, 0, 30, 60, 90)
_LABEL_WIDTH = 64


def _grid(cells: list[list[np.ndarray]], row_names, col_names, scale: int) -> Image.Image:
  """Pastes `[H, W, 3]` cells into a labelled grid image."""
  h, w = cells[0][0].shape[:2]
  h, w = h * scale, w * scale
  head = 14 if col_names else 0
  sheet = Image.new("RGB", (_LABEL_WIDTH + w * len(cells[0]), head + h * len(cells)), "white")
  draw = ImageDraw.Draw(sheet)
  for j, name in enumerate(col_names):
    draw.text((_LABEL_WIDTH + j * w + 2, 1), name, fill="black")
  for i, row in enumerate(cells):
    draw.text((2, head + i * h + h // 2 - 5), row_names[i], fill="black")
    for j, cell in enumerate(row):
      img = Image.fromarray(cell).resize((w, h), Image.NEAREST)
      sheet.paste(img, (_LABEL_WIDTH + j * w, head + i * h))
  return sheet


def contact_sheet(config_name: str, scale: int) -> Image.Image:
  """Rows = classes, columns = poses (full intensity) and frontal intensities."""
  cfg = CONFIGS[config_name]
  prototypes = expressions.prototypes(cfg.num_classes)
  lo = cfg.intensity_range[0]
  columns = [(yaw, 1.0) for yaw in _YAWS] + [(0, s) for s in (lo, (lo + 1) / 2, 1.0)]
  pool = generate.identity_pool(cfg, "test")
  canvas = cfg.image_size * cfg.supersample
  rows = []
  for k in range(cfg.num_classes):
    row = []
    for j, (yaw, intensity) in enumerate(columns):
      rng = np.random.default_rng([cfg.seed, 7, j])
      scene = render.sample_scene(rng, occlusion_rate=0.0)
      person = generate.identity(cfg, pool[j % len(pool)])
      row.append(render.render_face(
          render.render_background(scene, canvas), person, intensity * prototypes[k],
          render.Pose(yaw, 0.0, 0.0), scene, size=cfg.image_size, noise_rng=rng))
    rows.append(row)
  names = [f"yaw {y}" for y in _YAWS] + [f"s={s:.2f}" for _, s in columns[len(_YAWS):]]
  return _grid(rows, labels.class_names(cfg.num_classes), names, scale)


def _decode(data: bytes) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _first_per_class(cfg, per_class: int) -> list[list[dict]]:
  """The first `per_class` test examples of every class, in index order."""
  clean, _ = generate.label_plan(cfg, "test")
  rows = []
  for k in range(cfg.num_classes):
    picked = np.flatnonzero(clean == k)[:per_class]
    make = generate.image_example if cfg.kind == "images" else generate.clip_example
    rows.append([make(cfg, "test", int(i), k, k) for i in picked])
  return rows


def samples(config_name: str, per_class: int, scale: int) -> Image.Image:
  """Stored test images, one row per class."""
  cfg = CONFIGS[config_name]
  if cfg.kind != "images":
    raise ValueError(f"samples needs an images config, got {config_name!r} (use clip)")
  rows = [[_decode(e["image"]) for e in row] for row in _first_per_class(cfg, per_class)]
  return _grid(rows, labels.class_names(cfg.num_classes), [], scale)


def _clips(config_name: str):
  cfg = CONFIGS[config_name]
  if cfg.kind != "clips":
    raise ValueError(f"clip needs a clips config, got {config_name!r}")
  examples = [row[0] for row in _first_per_class(cfg, 1)]
  strips = [[_decode(f) for f in e["frames"]] for e in examples]
  names = [f"{n} [{e['apex_start']},{e['apex_end']})" for n, e in
           zip(labels.class_names(cfg.num_classes), examples)]
  return cfg, strips, names


def clip_strip(config_name: str, scale: int) -> Image.Image:
  """One test clip per class: rows = classes (with the apex window), columns = frames."""
  cfg, strips, names = _clips(config_name)
  return _grid(strips, names, [str(t) for t in range(cfg.num_frames)], scale)


def clip_animation(config_name: str, scale: int) -> list[Image.Image]:
  """One test clip per class side by side (columns = classes), one image per frame."""
  cfg, strips, _ = _clips(config_name)
  short = [n[:8] for n in labels.class_names(cfg.num_classes)]
  return [_grid([[s[t] for s in strips]], [f"t={t}"], short, scale)
          for t in range(cfg.num_frames)]


def main(argv):
  if len(argv) != 2 or argv[1] not in ("contact_sheet", "samples", "clip"):
    raise app.UsageError("usage: preview {contact_sheet|samples|clip} --out=PATH [--config=NAME]")
  command, out = argv[1], _OUT.value
  if not out:
    raise app.UsageError("--out is required")
  default = "clips" if command == "clip" else "images"
  name = _CONFIG.value or default
  if command == "contact_sheet":
    contact_sheet(name, _SCALE.value).save(out)
  elif command == "samples":
    samples(name, _COLUMNS.value, _SCALE.value).save(out)
  else:
    if out.lower().endswith(".gif"):
      frames = clip_animation(name, _SCALE.value)
      frames[0].save(out, save_all=True, append_images=frames[1:], duration=150, loop=0)
    else:
      clip_strip(name, _SCALE.value).save(out)
  print(f"wrote {out}")


if __name__ == "__main__":
  app.run(main)
