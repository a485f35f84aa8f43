"""Drawing predictions: boxed and labelled images/frames, probability timelines per track."""

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
from PIL import Image, ImageDraw

_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (210, 245, 60))


def draw(image: np.ndarray, faces: list[dict]) -> np.ndarray:
  """uint8 `[H, W, 3]` with each face's box, landmarks and "label p" drawn (faces: JSON records)."""
  canvas = Image.fromarray(image)
  pen = ImageDraw.Draw(canvas)
  width = max(1, round(min(image.shape[:2]) / 200))
  for k, face in enumerate(faces):
    colour = _COLOURS[(face.get("track") if face.get("track") is not None else k) % len(_COLOURS)]
    x0, y0, x1, y1 = face["box"]
    pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
    for x, y in (face.get("landmarks") or {}).values():
      pen.ellipse((x - width, y - width, x + width, y + width), fill=colour)
    text = f"{face['label']} {face['probabilities'][face['label']]:.2f}"
    left, top, right, bottom = pen.textbbox((x0, y0), text)
    top_y = y0 - (bottom - top) - 2 if y0 - (bottom - top) - 2 >= 0 else y1 + 2
    pen.rectangle((x0, top_y, x0 + right - left + 2, top_y + bottom - top + 2), fill=colour)
    pen.text((x0 + 1, top_y), text, fill=(255, 255, 255))
  return np.asarray(canvas)


def plot_timeline(records: list[dict], class_names, path: str, title: str) -> None:
  """Class probabilities over time (s), one panel per track, from the video's JSON records."""
  tracks = sorted({r["track"] for r in records})
  fig, axes = plt.subplots(len(tracks), 1, figsize=(9, 2.4 * len(tracks) + 0.6), squeeze=False,
                           sharex=True)
  for axis, track in zip(axes[:, 0], tracks):
    rows = sorted((r for r in records if r["track"] == track), key=lambda r: r["time"])
    times = [r["time"] for r in rows]
    for name in class_names:
      axis.plot(times, [r["probabilities"][name] for r in rows], label=name, marker=".")
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"face {track}")
  axes[-1, 0].set_xlabel("time (s)")
  axes[0, 0].set_title(title)
  axes[0, 0].legend(loc="upper right", fontsize="small", ncol=min(len(class_names), 4))
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
