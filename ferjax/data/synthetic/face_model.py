"""A small 3D landmark face model: identities, head surface and facial parts.

Head frame (a frontal camera looks down -z): x to the image's right, y up, z
towards the camera; one unit ~ half the width of the head. The head is the
union of two ellipsoids (cranium and jaw; the jaw moves down as the mouth
opens). Facial parts are polylines/polygons given in frontal coordinates
`(x, y, d)` and lifted onto the head surface: `z = surface(x, y) + d`, where
`d` is a protrusion (nose, lips). The renderer rotates and projects them.
"""

import dataclasses

import numpy as np

from ferjax.data.synthetic.expressions import ACTION_NAMES

Color = tuple[float, float, float]

_SKIN_LIGHT = np.array([238.0, 204.0, 180.0])
_SKIN_DARK = np.array([88.0, 57.0, 42.0])
_HAIR_COLORS = np.array([
    [24, 20, 18], [58, 40, 27], [102, 68, 42], [196, 160, 98], [142, 66, 34],
    [150, 148, 145], [222, 220, 214]], np.float64)
_IRIS_COLORS = np.array([
    [72, 44, 26], [40, 28, 22], [70, 110, 150], [80, 110, 70], [120, 90, 50]],
    np.float64)
HAIR_STYLES: tuple[str, ...] = ("bald", "short", "long")
_FRONT = 0.95  # z of the face front (forehead) at cranium centre height


@dataclasses.dataclass(frozen=True)
class Identity:
  """Class-independent traits of one synthetic person (lengths in head units)."""
  head_width: float
  head_height: float
  head_depth: float
  jaw_width: float
  jaw_height: float
  skin: Color
  hair: Color
  hair_style: int
  hairline: float
  eye_spacing: float
  eye_y: float
  eye_width: float
  eye_open: float
  iris: Color
  brow_height: float
  brow_thickness: float
  brow_arch: float
  brow: Color
  nose_length: float
  nose_width: float
  nose_protrusion: float
  mouth_y: float
  mouth_width: float
  lip_upper: float
  lip_lower: float
  lip: Color
  resting_corner: float
  ear_size: float
  clothes: Color


def _color(c: np.ndarray) -> Color:
  c = np.clip(c, 0, 255)
  return (float(c[0]), float(c[1]), float(c[2]))


def sample_identity(rng: np.random.Generator) -> Identity:
  """Draws face shape, skin tone, hair, eye spacing, etc. of one identity."""
  u = rng.uniform
  a = u(0.9, 1.06)
  skin = _SKIN_LIGHT + u(0, 1) * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 6, 3)
  hair = _HAIR_COLORS[rng.integers(len(_HAIR_COLORS))] * u(0.85, 1.15)
  brow = np.minimum(hair, 0.6 * skin) * u(0.7, 1.0)
  lip = skin + u(0.25, 0.55) * (np.array([165.0, 70.0, 75.0]) - skin)
  eye_y = u(0.08, 0.16)
  nose_length = u(0.27, 0.36)
  return Identity(
      head_width=a, head_height=u(1.15, 1.25), head_depth=a * u(1.1, 1.2),
      jaw_width=a * u(0.66, 0.78), jaw_height=u(0.48, 0.56),
      skin=_color(skin), hair=_color(hair),
      hair_style=int(rng.choice(3, p=[0.1, 0.5, 0.4])),
      hairline=u(0.62, 0.82), eye_spacing=u(0.34, 0.4), eye_y=eye_y,
      eye_width=u(0.15, 0.18), eye_open=u(0.06, 0.08),
      iris=_color(_IRIS_COLORS[rng.integers(len(_IRIS_COLORS))]),
      brow_height=u(0.15, 0.2), brow_thickness=u(0.05, 0.075),
      brow_arch=u(0.0, 0.045), brow=_color(brow),
      nose_length=nose_length, nose_width=u(0.075, 0.11),
      nose_protrusion=u(0.2, 0.3),
      mouth_y=eye_y - nose_length - u(0.2, 0.25), mouth_width=u(0.26, 0.32),
      lip_upper=u(0.04, 0.06), lip_lower=u(0.055, 0.08), lip=_color(lip),
      resting_corner=rng.normal(0.0, 0.008), ear_size=u(0.85, 1.15),
      clothes=_color(rng.uniform(20, 235, 3)))


def ellipsoids(identity: Identity, jaw_drop: float) -> tuple[np.ndarray, np.ndarray]:
  """Centres and radii `[2, 3]` of the cranium and jaw ellipsoids."""
  a, b, c = identity.head_width, identity.head_height, identity.head_depth
  centers = np.array([[0.0, 0.25, _FRONT - c], [0.0, -0.45 - 0.2 * jaw_drop, 0.15]])
  radii = np.array([[a, b, c], [identity.jaw_width, identity.jaw_height, 0.58]])
  return centers, radii


def back_center(identity: Identity) -> float:
  """z of the cranium centre (the vertical axis the hair and ears refer to)."""
  return _FRONT - identity.head_depth


def lift(xyd: np.ndarray, centers: np.ndarray, radii: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
  """Lifts frontal points `[N, 3]` (x, y, d) onto the front of the head.

  `z = max_e (c_e,z + r_e,z sqrt(1 - u_e^2 - v_e^2)) + d` over the ellipsoids
  whose footprint contains (x, y); the normal is that ellipsoid's gradient.

  Returns:
    points `[N, 3]` and unit normals `[N, 3]` in the head frame.
  """
  x, y, d = xyd[:, 0:1], xyd[:, 1:2], xyd[:, 2]
  du = (x - centers[:, 0]) / radii[:, 0]
  dv = (y - centers[:, 1]) / radii[:, 1]
  q = np.maximum(1.0 - du * du - dv * dv, 0.0)
  zs = centers[:, 2] + radii[:, 2] * np.sqrt(q)
  zs = np.where(q > 0, zs, -np.inf)
  e = np.argmax(zs, axis=1)
  rows = np.arange(len(xyd))
  z = np.where(np.isfinite(zs[rows, e]), zs[rows, e], centers[e, 2])
  n = np.stack([du[rows, e] / radii[e, 0], dv[rows, e] / radii[e, 1],
                (z - centers[e, 2]) / radii[e, 2] ** 2], axis=1)
  n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-9
  return np.stack([x[:, 0], y[:, 0], z + d], axis=1), n


def hair_mask(identity: Identity, x: np.ndarray, y: np.ndarray,
              z: np.ndarray) -> np.ndarray:
  """Which cranium surface points (head-frame coordinates `[M]`) have hair.

  The hairline height depends on the azimuth phi = atan2(x, z) around the
  vertical axis: `hairline` at the forehead, above the ears at the temples,
  down to the nape at the back (lower still for long hair).
  """
  if HAIR_STYLES[identity.hair_style] == "bald":
    return np.zeros(x.shape, bool)
  phi = np.abs(np.arctan2(x, z - back_center(identity)))
  long_hair = HAIR_STYLES[identity.hair_style] == "long"
  side = 0.05 if long_hair else 0.28
  back = -1.2 if long_hair else -0.45
  level = np.interp(phi, [0.0, 0.55, 1.25, 1.75, 2.3, np.pi],
                    [identity.hairline, identity.hairline - 0.05, side + 0.1,
                     side, back, back])
  return y > level


@dataclasses.dataclass(frozen=True)
class Part:
  """A facial part in frontal coordinates, in draw order.

  Attributes:
    xyd: `[n, 3]` frontal x, y and protrusion d of its points.
    kind: "fill" (closed polygon) or "line" (open polyline).
    role: colour role (see render.py): sclera, iris, pupil, lid, brow, lip,
      mouth, teeth, fold, nose, nostril.
    width: line width in head units (lines only).
    strength: blend from the skin colour (0) to the role colour (1).
  """
  xyd: np.ndarray
  kind: str
  role: str
  width: float = 0.0
  strength: float = 1.0


_T7 = np.linspace(-1.0, 1.0, 7)
_T11 = np.linspace(-1.0, 1.0, 11)
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 12, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 12, endpoint=False))], 1)


def _clip(v: float, lo: float, hi: float) -> float:
  return min(max(v, lo), hi)


def _pts(x, y, d=0.0) -> np.ndarray:
  """Stacks coordinates (arrays or scalars, broadcast) into `[n, 3]` (x, y, d)."""
  x = np.asarray(x, float)
  out = np.empty((x.size, 3))
  out[:, 0], out[:, 1], out[:, 2] = x, y, d
  return out


def _eye(idt: Identity, a: dict[str, float], s: int, blink: float,
         gaze: np.ndarray) -> list[Part]:
  """Sclera, iris, pupil, lids, crease and cheek crease of the eye on side s."""
  cx, cy, ew = s * idt.eye_spacing, idt.eye_y, idt.eye_width
  up = idt.eye_open * _clip(1 + 1.0 * a["upper_lid_raise"]
                              - 0.45 * a["lid_tighten"]
                              - 0.35 * a["cheek_raise"]
                              - 0.15 * a["brow_lower"], 0.15, 2.3)
  lo = 0.65 * idt.eye_open * _clip(1 - 0.7 * a["cheek_raise"]
                                     - 0.5 * a["lid_tighten"]
                                     + 0.3 * max(a["upper_lid_raise"], 0.0),
                                     0.15, 1.5)
  up = up * (1 - blink) - 0.6 * lo * blink

  def upper(t):
    return cy + up * (1 - t * t) ** 0.8

  def lower(t):
    return cy - lo * (1 - t * t) ** 0.9

  x = cx + ew * _T7
  parts = [Part(_pts(x, upper(_T7) + 0.055 + 0.2 * up, 0.0), "line", "fold",
                0.012, 0.3)]
  if a["cheek_raise"] > 0.05:
    parts.append(Part(_pts(x[1:-1], lower(_T7[1:-1]) - 0.05, 0.0), "line",
                      "fold", 0.016, min(1.0, 0.9 * a["cheek_raise"])))
  parts.append(Part(_pts(np.r_[x, x[-2:0:-1]],
                         np.r_[upper(_T7), lower(_T7[-2:0:-1])], 0.01),
                    "fill", "sclera"))
  if up + lo > 0.02:
    iris_c = np.array([cx + 0.35 * ew * gaze[0], cy + 0.2 * idt.eye_open * gaze[1]])
    for radius, role in ((0.4 * ew, "iris"), (0.17 * ew, "pupil")):
      p = iris_c + radius * _CIRCLE
      t = np.clip((p[:, 0] - cx) / ew, -1.0, 1.0)
      px = np.clip(p[:, 0], cx - ew, cx + ew)
      py = np.clip(p[:, 1], lower(t), np.maximum(upper(t), lower(t)))
      parts.append(Part(_pts(px, py, 0.015), "fill", role))
  parts.append(Part(_pts(x, upper(_T7), 0.02), "line", "lid", 0.03))
  parts.append(Part(_pts(x[1:-1], lower(_T7[1:-1]), 0.015), "line", "lid", 0.01, 0.45))
  return parts


def _brow(idt: Identity, a: dict[str, float], s: int) -> Part:
  """The eyebrow on side s as a tapered filled band (inner end thickest)."""
  f = np.linspace(0.0, 1.0, 5)
  inner, outer = 0.09, idt.eye_spacing + idt.eye_width + 0.05
  lower = a["brow_lower"]
  x = inner + f * (outer - inner) - 0.06 * lower * (1 - f)
  y = (idt.eye_y + idt.brow_height + idt.brow_arch * np.sin(np.pi * f * 0.85)
       + 0.2 * a["inner_brow_raise"] * (1 - f) ** 1.3
       + 0.16 * a["outer_brow_raise"] * f ** 0.7
       - 0.08 * lower - 0.1 * lower * (1 - f)
       - 0.04 * a["nose_wrinkle"] * (1 - f))
  half = 0.5 * idt.brow_thickness * (1.1 - 0.55 * f)
  return Part(_pts(s * np.r_[x, x[::-1]], np.r_[y + half, (y - half)[::-1]], 0.02),
              "fill", "brow")


def _wrinkles(idt: Identity, a: dict[str, float]) -> list[Part]:
  """Forehead (AU1/2), glabella (AU4), nose-bridge (AU9) and chin (AU17) folds."""
  parts = []
  brow_top = idt.eye_y + idt.brow_height
  raise_ = 0.5 * (a["inner_brow_raise"] + a["outer_brow_raise"])
  if raise_ > 0.1:
    x = np.linspace(-0.32, 0.32, 7)
    for j in range(3):
      y = brow_top + 0.2 + 0.075 * j + 0.015 * np.cos(3 * x + j)
      parts.append(Part(_pts(x, y), "line", "fold", 0.014, min(1.0, 1.1 * raise_)))
  if a["brow_lower"] > 0.1:
    for s in (-1, 1):
      parts.append(Part(_pts([s * 0.03, s * 0.045], [brow_top - 0.04, brow_top + 0.09]),
                        "line", "fold", 0.016, min(1.0, a["brow_lower"])))
  if a["nose_wrinkle"] > 0.1:
    for j in range(3):
      y = idt.eye_y - 0.02 - 0.04 * j
      parts.append(Part(_pts([-0.06, 0.0, 0.06], [y, y + 0.012, y], 0.05), "line",
                        "fold", 0.013, min(1.0, a["nose_wrinkle"])))
  if a["chin_raise"] > 0.15:
    y = idt.mouth_y - 0.2
    parts.append(Part(_pts([-0.09, 0.0, 0.09], [y, y - 0.025, y], 0.0), "line",
                      "fold", 0.014, min(1.0, a["chin_raise"])))
  return parts


def _mouth(idt: Identity, a: dict[str, float], side: int) -> tuple[list[Part], list[np.ndarray]]:
  """Lips, mouth interior, teeth and lip line; also the two corner points."""
  c12, c14, c15 = a["lip_corner_pull"], a["unilateral_pull"], a["lip_corner_depress"]
  c20, c24, c26 = a["lip_stretch"], a["lip_press"], a["jaw_drop"]
  c10 = a["upper_lip_raise"] + 0.3 * a["nose_wrinkle"]
  c17, c25 = a["chin_raise"], a["lips_part"]
  ups, outs = [], []
  for s in (-1, 1):
    uni = c14 if s == side else 0.0
    ups.append(idt.resting_corner + 0.17 * c12 - 0.14 * c15 + 0.12 * uni - 0.015 * c20)
    outs.append(idt.mouth_width + 0.06 * c12 + 0.14 * c20 - 0.08 * c24
                - 0.09 * c26 + 0.07 * uni)
  t = _T11
  side_idx = (t > 0).astype(int)
  up = np.array(ups)[side_idx]
  x = t * np.array(outs)[side_idx]
  bell = 1 - t * t
  mid = idt.mouth_y + up * t * t + 0.035 * c17 * bell
  open_up = 0.07 * c10 + 0.025 * c25 + 0.04 * c26
  open_lo = 0.3 * c26 + 0.06 * c25 + 0.03 * c20
  upper_in = mid + open_up * bell ** 0.7
  lower_in = mid - open_lo * bell ** 0.6
  lip_u = idt.lip_upper * max(0.2, 1 - 0.75 * c24 - 0.3 * c20 - 0.15 * c12)
  lip_l = idt.lip_lower * max(0.2, 1 - 0.7 * c24 - 0.3 * c20) + 0.02 * c17
  bow = 1 - 0.35 * np.exp(-(t / 0.18) ** 2)
  upper_out = upper_in + lip_u * bell ** 0.4 * bow
  lower_out = lower_in - lip_l * bell ** 0.5
  d = 0.05 * bell ** 0.5 + 0.03 * c17 * bell
  parts = [Part(_pts(np.r_[x, x[-2:0:-1]], np.r_[upper_out, lower_out[-2:0:-1]],
                     np.r_[d, d[-2:0:-1]]), "fill", "lip")]
  if open_up + open_lo > 0.012:
    parts.append(Part(_pts(np.r_[x, x[-2:0:-1]], np.r_[upper_in, lower_in[-2:0:-1]],
                           np.r_[d, d[-2:0:-1]]), "fill", "mouth"))
    inner = slice(2, -2)
    teeth_lo = np.maximum(upper_in - 0.065, lower_in)
    parts.append(Part(_pts(np.r_[x[inner], x[inner][::-1]],
                           np.r_[upper_in[inner], teeth_lo[inner][::-1]], d[inner][0] * 0.8),
                      "fill", "teeth"))
    if c20 + c10 > 0.4:
      teeth_up = np.minimum(lower_in + 0.04, upper_in)
      parts.append(Part(_pts(np.r_[x[inner], x[inner][::-1]],
                             np.r_[lower_in[inner], teeth_up[inner][::-1]], d[inner][0] * 0.8),
                        "fill", "teeth"))
  else:
    parts.append(Part(_pts(x, mid, d + 0.005), "line", "mouth", 0.024))
  corners = [np.array([x[0], mid[0]]), np.array([x[-1], mid[-1]])]
  return parts, corners


def _nose_and_folds(idt: Identity, a: dict[str, float], corners: list[np.ndarray],
                    side: int) -> tuple[list[Part], list[Part]]:
  """Nasolabial folds (drawn under the mouth) and the nose (drawn last)."""
  top_y = idt.eye_y - 0.02
  tip_y = idt.eye_y - idt.nose_length
  base_y = tip_y - 0.04
  wing = idt.nose_width * (1 + 0.3 * a["nose_wrinkle"] + 0.15 * a["upper_lip_raise"])
  p = idt.nose_protrusion
  folds, nose = [], []
  for s, corner in zip((-1, 1), corners):
    depth = (0.15 + 0.75 * a["lip_corner_pull"] + 0.6 * a["upper_lip_raise"]
             + 0.35 * a["nose_wrinkle"]
             + (0.7 * a["unilateral_pull"] if s == side else 0.0))
    start = np.array([s * (wing + 0.035), base_y + 0.03])
    end = corner + np.array([s * 0.045, 0.0])
    mid = 0.5 * (start + end) + np.array([s * 0.06, 0.0])
    folds.append(Part(_pts([start[0], mid[0], end[0]], [start[1], mid[1], end[1]]),
                      "line", "fold", 0.022, min(1.0, depth)))
    nose.append(Part(_pts([0.0, 0.0, 0.0, s * wing, s * 0.35 * wing],
                          [top_y, tip_y, base_y, base_y + 0.015, top_y - 0.08],
                          [0.03, p, 0.45 * p, 0.04, 0.05]), "fill", "nose"))
  for s in (-1, 1):
    nose.append(Part(_pts([0.0, 0.0, s * 0.6 * wing], [tip_y, base_y, base_y + 0.006],
                          [p, 0.45 * p, 0.2 * p]), "line", "nostril", 0.02, 0.6))
    c = np.array([s * 0.45 * wing, base_y + 0.008])
    ring = c + _CIRCLE * np.array([0.026, 0.012])
    nose.append(Part(_pts(ring[:, 0], ring[:, 1], 0.22 * p), "fill", "nostril"))
  return folds, nose


def face_parts(identity: Identity, actions: np.ndarray, *, blink: float = 0.0,
               gaze: np.ndarray | None = None, side: int = 1) -> list[Part]:
  """All facial parts for given actions `[A]`, in back-to-front draw order.

  Args:
    identity: the person.
    actions: expression action strengths (expressions.ACTION_NAMES).
    blink: eyelid closure in [0, 1], independent of the expression.
    gaze: `[2]` iris offset in [-1, 1] (x, y).
    side: +1/-1, the side of the one-sided actions (unilateral_pull).
  """
  gaze = np.zeros(2) if gaze is None else gaze
  actions = dict(zip(ACTION_NAMES, np.asarray(actions, float).tolist()))
  mouth, corners = _mouth(identity, actions, side)
  folds, nose = _nose_and_folds(identity, actions, corners, side)
  parts = _wrinkles(identity, actions) + folds
  for s in (-1, 1):
    parts.append(_brow(identity, actions, s))
    parts.extend(_eye(identity, actions, s, blink, gaze))
  return parts + mouth + nose


def ear(identity: Identity, s: int) -> np.ndarray:
  """Points `[8, 3]` (head frame) of the ear on side s, outward-facing."""
  a = identity.head_width
  theta = np.linspace(0, 2 * np.pi, 8, endpoint=False)
  up = identity.ear_size * 0.17 * np.sin(theta)
  back = identity.ear_size * 0.11 * np.cos(theta)
  return np.stack([s * (a * 0.97 + 0.04 * (1 - np.cos(theta))), identity.eye_y - 0.12 + up,
                   back_center(identity) + 0.05 + back], 1)
