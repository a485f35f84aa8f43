"""Rasteriser for synthetic faces: numpy ray casting for the head, PIL for parts.

A frame is drawn on a canvas `supersample` times larger than the output:
background and clutter, neck and shoulders, long hair and the far ear (PIL);
the head (cranium + jaw ellipsoids, hair where `face_model.hair_mask` says)
ray-cast per pixel with Lambertian shading (numpy); facial parts lifted onto
the head, rotated, projected and back-face culled (PIL); the occluder. The
canvas is box-downsampled, then a global gain, colour cast, gamma, an
illumination gradient, blur and sensor noise are applied.

Everything in `Scene` is drawn independently of the expression class.
"""

import dataclasses
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ferjax.data.synthetic import face_model
from ferjax.data.synthetic.expressions import A

OCCLUDER_NAMES: tuple[str, ...] = ("none", "hand", "bar", "sunglasses", "mask")
_ROLE_COLORS = {
    "sclera": (236.0, 232.0, 224.0), "pupil": (12.0, 10.0, 10.0),
    "lid": (38.0, 26.0, 22.0), "mouth": (62.0, 18.0, 24.0),
    "teeth": (236.0, 232.0, 218.0)}
_SKIN_FACTORS = {"fold": 0.55, "nose": 0.86, "nostril": 0.35}
_CULL = {"nose": -0.45, "nostril": -0.2}
_HEAD_UNITS = 0.48  # canvas fraction per head unit at scale 1
_CREASE = 0.12  # depth scale of the soft union of cranium and jaw normals


@dataclasses.dataclass(frozen=True)
class Pose:
  """Head pose in degrees: yaw > 0 turns the face to the image's right,
  pitch > 0 tilts it up, roll > 0 rotates it counter-clockwise."""
  yaw: float
  pitch: float
  roll: float


def rotation(pose: Pose) -> np.ndarray:
  """Head-to-camera rotation `R = R_roll R_pitch R_yaw`, `[3, 3]`."""
  y, p, r = (math.radians(a) for a in (pose.yaw, pose.pitch, pose.roll))
  cy, sy, cp, sp, cr, sr = (math.cos(y), math.sin(y), math.cos(p), math.sin(p),
                            math.cos(r), math.sin(r))
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rp = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
  rr = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
  return rr @ rp @ ry


@dataclasses.dataclass(frozen=True)
class Scene:
  """Class-independent nuisance of one image or clip (positions in canvas
  fractions, colours 0..255)."""
  background: np.ndarray     # [3]
  clutter: tuple             # ((kind, coords [k], color [3], width), ...)
  light: np.ndarray          # [3] unit direction, camera frame
  ambient: float
  scale: float
  offset: np.ndarray         # [2]
  gain: np.ndarray           # [3] per-channel gain (global gain x colour cast)
  gamma: float
  gradient: np.ndarray       # [3] (gx, gy, amount) of a multiplicative ramp
  blur: float
  noise_std: float
  occluder: int
  occluder_params: np.ndarray  # [10] uniforms for placement, angle, size, colour


def sample_scene(rng: np.random.Generator, occlusion_rate: float) -> Scene:
  """Draws background clutter, lighting, framing, camera and occluder."""
  u = rng.uniform
  clutter = []
  for _ in range(rng.integers(1, 7)):
    kind = int(rng.integers(4))
    coords = u(-0.1, 1.1, 8 if kind == 3 else 4)
    clutter.append((kind, coords, u(0, 255, 3), u(0.01, 0.06)))
  theta, lz = u(-np.pi, np.pi), u(0.45, 0.95)
  light = np.array([np.sqrt(1 - lz * lz) * np.cos(theta),
                    np.sqrt(1 - lz * lz) * np.sin(theta), lz])
  occluder = int(rng.integers(1, len(OCCLUDER_NAMES))) if u() < occlusion_rate else 0
  angle = u(0, 2 * np.pi)
  return Scene(
      background=u(15, 240, 3), clutter=tuple(clutter), light=light,
      ambient=u(0.5, 0.75), scale=u(0.9, 1.1), offset=rng.normal(0, 0.03, 2),
      gain=u(0.75, 1.15) * u(0.9, 1.1, 3), gamma=u(0.8, 1.25),
      gradient=np.array([np.cos(angle), np.sin(angle), u(0.0, 0.35)]),
      blur=u(0.0, 0.7) if u() < 0.3 else 0.0, noise_std=u(1.0, 6.0),
      occluder=occluder, occluder_params=u(0, 1, 10))


def render_background(scene: Scene, canvas: int) -> Image.Image:
  """The background with clutter (rectangles, ellipses, lines, polygons)."""
  img = Image.new("RGB", (canvas, canvas), _rgb(scene.background))
  draw = ImageDraw.Draw(img)
  for kind, coords, color, width in scene.clutter:
    c = (coords * canvas).tolist()
    if kind in (0, 1):
      box = [min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3])]
      (draw.rectangle if kind == 0 else draw.ellipse)(box, fill=_rgb(color))
    elif kind == 2:
      draw.line(c, fill=_rgb(color), width=max(1, int(width * canvas)))
    else:
      draw.polygon(c, fill=_rgb(color))
  return img


def _rgb(c) -> tuple[int, int, int]:
  return tuple(np.clip(c, 0, 255).astype(int).tolist())


def _hull(p: np.ndarray) -> np.ndarray:
  """Convex hull of 2D points `[n, 2]` (monotone chain), counter-clockwise."""
  pts = sorted(map(tuple, p))

  def half(seq):
    out = []
    for q in seq:
      while len(out) >= 2 and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1])
                               - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0])) <= 0:
        out.pop()
      out.append(q)
    return out
  lower, upper = half(pts), half(pts[::-1])
  return np.array(lower[:-1] + upper[:-1])


class _Camera:
  """Orthographic camera: head frame -> canvas pixels."""

  def __init__(self, pose: Pose, scene: Scene, canvas: int):
    self.canvas = canvas
    self.r = rotation(pose)
    self.s = _HEAD_UNITS * scene.scale * canvas
    # Frame the face like a face detector would: the face centre (0, -0.15)
    # at the canvas centre, shifted against the yaw so profiles stay in view.
    shift = -0.65 * math.sin(math.radians(pose.yaw)) * self.s
    self.origin = canvas * (np.array([0.5, 0.5]) + scene.offset) + [shift, -0.15 * self.s]

  def project(self, p: np.ndarray) -> np.ndarray:
    """Head-frame points `[N, 3]` -> canvas pixels `[N, 2]`."""
    q = p @ self.r.T
    return np.stack([self.origin[0] + self.s * q[:, 0],
                     self.origin[1] - self.s * q[:, 1]], 1)


def _shade(scene: Scene, normals_cam: np.ndarray) -> np.ndarray:
  return scene.ambient + (1 - scene.ambient) * np.maximum(normals_cam @ scene.light, 0.0)


def _cast_head(cam: _Camera, identity: face_model.Identity, scene: Scene,
               jaw_drop: float, grid: int) -> tuple[np.ndarray, np.ndarray]:
  """Ray-casts the cranium/jaw union on a `grid x grid` lattice of the canvas.

  Orthographic rays through the cell centres hit ellipsoid e where
  `|o_e + t d_e| = 1` (o, d scaled by 1 / radii); the largest root is the
  visible surface. Shading is Lambertian with the scene's ambient term.

  Returns:
    `[grid, grid, 3]` uint8 colours and the `[grid, grid]` bool hit mask.
  """
  centers, radii = face_model.ellipsoids(identity, jaw_drop)
  cell = cam.canvas / grid
  coords = ((np.arange(grid, dtype=np.float32) + 0.5) * cell)
  gx, gy = np.meshgrid((coords - cam.origin[0]) / cam.s, -(coords - cam.origin[1]) / cam.s)
  rgb = np.zeros((grid, grid, 3), np.uint8)
  # Per-component [h, w] arrays (head frame = R^T camera frame): a trailing
  # axis of length 3 would make every numpy op ~20x slower.
  r = cam.r
  base = [gx * r[0, k] + gy * r[1, k] for k in range(3)]
  d = r[2]
  ts = []
  for e in range(2):
    o = [(base[k] - centers[e, k]) / radii[e, k] for k in range(3)]
    dd = d / radii[e]
    qa = dd @ dd
    qb = 2 * (o[0] * dd[0] + o[1] * dd[1] + o[2] * dd[2])
    qc = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - 1
    disc = qb * qb - 4 * qa * qc
    ts.append(np.where(disc >= 0, (np.sqrt(np.maximum(disc, 0)) - qb) / (2 * qa), -np.inf))
  best_t = np.maximum(ts[0], ts[1])
  hit = np.isfinite(best_t)
  if not hit.any():
    return rgb, hit
  t_hit = best_t[hit]
  q = [base[k][hit] + t_hit * d[k] for k in range(3)]
  # Soft union: blend the two gradients near the crease so it does not show.
  normal = [0.0, 0.0, 0.0]
  for e in range(2):
    w = np.exp((ts[e][hit] - t_hit) / _CREASE)
    for k in range(3):
      normal[k] = normal[k] + w * (q[k] - centers[e, k]) / radii[e, k] ** 2
  norm = np.sqrt(normal[0] ** 2 + normal[1] ** 2 + normal[2] ** 2)
  light = r.T @ scene.light  # the light direction in the head frame
  lambert = (normal[0] * light[0] + normal[1] * light[1] + normal[2] * light[2]) / norm
  shade = scene.ambient + (1 - scene.ambient) * np.maximum(lambert, 0.0)
  hair = face_model.hair_mask(identity, q[0], q[1], q[2]) & (ts[0][hit] >= ts[1][hit])
  for k in range(3):
    rgb[..., k][hit] = np.clip(np.where(hair, identity.hair[k], identity.skin[k]) * shade, 0, 255)
  return rgb, hit


def _part_colors(identity: face_model.Identity, parts: list[face_model.Part]) -> np.ndarray:
  """Unshaded colours `[P, 3]`: skin + strength * (role colour - skin)."""
  skin = np.array(identity.skin)
  roles = {k: np.array(v) for k, v in _ROLE_COLORS.items()}
  roles.update({k: skin * f for k, f in _SKIN_FACTORS.items()})
  roles.update(iris=np.array(identity.iris), brow=np.array(identity.brow),
               lip=np.array(identity.lip))
  role = np.array([roles[p.role] for p in parts])
  strength = np.array([p.strength for p in parts])[:, None]
  return skin + strength * (role - skin)


def _draw_parts(draw: ImageDraw.ImageDraw, cam: _Camera, scene: Scene,
                identity: face_model.Identity, parts: list[face_model.Part],
                jaw_drop: float) -> None:
  """Lifts, projects, culls and draws facial parts in order.

  A point is culled when its surface normal faces away from the camera
  (n_z < threshold of its role); a part's colour is shaded by the mean
  Lambert term of its points.
  """
  centers, radii = face_model.ellipsoids(identity, jaw_drop)
  sizes = np.array([len(p.xyd) for p in parts])
  starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
  pts, normals = face_model.lift(np.concatenate([p.xyd for p in parts]), centers, radii)
  ncam = normals @ cam.r.T
  px = cam.project(pts)
  shade = np.add.reduceat(_shade(scene, ncam), starts) / sizes
  fills = np.clip(_part_colors(identity, parts) * shade[:, None], 0, 255).astype(int).tolist()
  thresholds = np.repeat([_CULL.get(p.role, -0.02) for p in parts], sizes)
  visible = ncam[:, 2] > thresholds
  for part, start, k, fill in zip(parts, starts, sizes, fills):
    vis = visible[start:start + k]
    xy = px[start:start + k][vis]
    if part.kind == "fill":
      if len(xy) >= 3:
        draw.polygon(xy.ravel().tolist(), fill=tuple(fill))
    elif len(xy) >= 2:
      draw.line(xy.ravel().tolist(), fill=tuple(fill),
                width=max(1, round(part.width * cam.s)), joint="curve")


def _ear(draw, cam, scene, identity, s: int, front: bool) -> None:
  """Draws the ear on side s if it faces the camera (front) or not (behind)."""
  normal = np.array([s * 0.9, 0.0, -0.45]) @ cam.r.T
  if (normal[2] > 0) != front:
    return
  px = cam.project(face_model.ear(identity, s))
  shade = _shade(scene, normal / np.linalg.norm(normal))
  draw.polygon(px.ravel().tolist(), fill=_rgb(np.array(identity.skin) * 0.92 * shade))


def _draw_body(draw, cam, identity) -> None:
  """Shoulders, neck and (for long hair) the hair hanging behind the head."""
  ox, canvas = cam.origin[0], cam.canvas
  draw.ellipse([ox - 0.8 * canvas, cam.origin[1] + 1.25 * cam.s,
                ox + 0.8 * canvas, cam.origin[1] + 4 * cam.s],
               fill=_rgb(identity.clothes))
  neck = cam.project(np.array([[0.0, -0.55, -0.3]]))[0]
  w = 0.62 * identity.jaw_width * cam.s
  draw.rectangle([neck[0] - w, neck[1], neck[0] + w, canvas],
                 fill=_rgb(np.array(identity.skin) * 0.72))
  if face_model.HAIR_STYLES[identity.hair_style] == "long":
    # A rounded slab of hair behind the head: the hull of two half-ellipses.
    theta = np.linspace(0.0, np.pi, 7)
    ring = np.stack([1.08 * identity.head_width * np.cos(theta),
                     face_model.back_center(identity) + 0.25 - 1.0 * np.sin(theta)], 1)
    slab = np.array([[x, y, z] for y in (0.5, -1.3) for x, z in ring])
    hull = _hull(cam.project(slab))
    draw.polygon(hull.ravel().tolist(), fill=_rgb(np.array(identity.hair) * 0.8))


def _occlude(draw, cam, scene, identity, jaw_drop: float) -> None:
  """Draws the scene's occluder (hand, bar, sunglasses or mask) over the face."""
  name = OCCLUDER_NAMES[scene.occluder]
  r = scene.occluder_params
  centers, radii = face_model.ellipsoids(identity, jaw_drop)
  if name == "sunglasses":
    lens = np.stack([0.2 * np.cos(np.linspace(0, 2 * np.pi, 10)),
                     0.13 * np.sin(np.linspace(0, 2 * np.pi, 10))], 1)
    dark = _rgb(np.full(3, 10 + 50 * r[0]))
    for s in (-1, 1):
      c = np.array([s * identity.eye_spacing, identity.eye_y])
      xyd = np.concatenate([lens + c, np.full((10, 1), 0.08)], 1)
      pts, normals = face_model.lift(xyd, centers, radii)
      vis = (normals @ cam.r.T)[:, 2] > -0.1
      if vis.sum() >= 3:
        draw.polygon(cam.project(pts[vis]).ravel().tolist(), fill=dark)
    bridge = np.array([[-identity.eye_spacing + 0.18, identity.eye_y + 0.05, 0.1],
                       [identity.eye_spacing - 0.18, identity.eye_y + 0.05, 0.1]])
    pts, _ = face_model.lift(bridge, centers, radii)
    draw.line(cam.project(pts).ravel().tolist(), fill=dark,
              width=max(1, round(0.03 * cam.s)))
    return
  if name == "mask":
    x = np.linspace(-0.85, 0.85, 9) * identity.jaw_width
    top = identity.eye_y - identity.nose_length + 0.05 + 0.04 * (1 - x * x)
    bottom = -0.42 - 0.2 * jaw_drop - identity.jaw_height * 0.85 * np.sqrt(
        np.maximum(1 - (x / identity.jaw_width) ** 2, 0.05))
    xyd = np.stack([np.r_[x, x[::-1]], np.r_[top, bottom[::-1]], np.full(18, 0.04)], 1)
    pts, normals = face_model.lift(xyd, centers, radii)
    vis = (normals @ cam.r.T)[:, 2] > -0.15
    if vis.sum() >= 3:
      color = np.array([[235, 235, 230], [150, 190, 225], [30, 30, 35]])[int(r[0] * 3)]
      draw.polygon(cam.project(pts[vis]).ravel().tolist(), fill=_rgb(color * (0.8 + 0.2 * r[1])))
    return
  anchors = np.array([[0.0, identity.mouth_y, 0.1], [-identity.eye_spacing, identity.eye_y, 0.1],
                      [identity.eye_spacing, identity.eye_y, 0.1], [0.0, identity.mouth_y - 0.2, 0.1],
                      [0.45, identity.mouth_y + 0.1, 0.1], [-0.45, identity.mouth_y + 0.1, 0.1]])
  anchor = anchors[int(r[2] * len(anchors))]
  pts, _ = face_model.lift(anchor[None], centers, radii)
  c = cam.project(pts)[0] + (r[3:5] - 0.5) * 0.3 * cam.s
  angle = 2 * np.pi * r[5]
  direction = np.array([np.cos(angle), np.sin(angle)])
  if name == "bar":
    half = 2.0 * cam.s * direction
    draw.line([*(c - half), *(c + half)], fill=_rgb(255 * r[7:10]),
              width=max(2, round((0.2 + 0.15 * r[6]) * cam.s)))
    return
  skin = _rgb(np.array(identity.skin) * (0.85 + 0.2 * r[6]))
  palm = 0.32 * cam.s * (0.9 + 0.3 * r[7])
  normal = np.array([-direction[1], direction[0]])
  for k in range(4):
    base = c + normal * palm * (0.75 * k / 3 - 0.375) + direction * palm * 0.5
    tip = base + direction * palm * (1.2 + 0.25 * np.sin(k * 1.3))
    draw.line([*base, *tip], fill=skin, width=max(2, round(0.28 * palm)), joint="curve")
  draw.ellipse([c[0] - palm, c[1] - palm, c[0] + palm, c[1] + palm], fill=skin)


def render_face(background: Image.Image, identity: face_model.Identity,
                actions: np.ndarray, pose: Pose, scene: Scene, *, size: int,
                noise_rng: np.random.Generator, blink: float = 0.0,
                gaze: np.ndarray | None = None, side: int = 1) -> np.ndarray:
  """Renders one frame.

  Args:
    background: `render_background(scene, size * supersample)`; its size sets
      the supersampling factor (a multiple of `size`).
    identity, actions, blink, gaze, side: see `face_model.face_parts`.
    pose: head pose.
    scene: nuisance parameters.
    size: output height = width.
    noise_rng: generator for the sensor noise of this frame.

  Returns:
    `[size, size, 3]` uint8 RGB.
  """
  canvas = background.size[0]
  if canvas % size:
    raise ValueError(f"background size {canvas} is not a multiple of size {size}")
  jaw_drop = float(actions[A["jaw_drop"]]) + 0.2 * float(actions[A["lips_part"]])
  cam = _Camera(pose, scene, canvas)
  img = background.copy()
  draw = ImageDraw.Draw(img)
  _draw_body(draw, cam, identity)
  for s in (-1, 1):
    _ear(draw, cam, scene, identity, s, front=False)
  # The head is ray-cast at the output resolution and pasted; parts drawn on
  # top of it are supersampled.
  rgb, hit = _cast_head(cam, identity, scene, jaw_drop, size)
  img.paste(Image.fromarray(rgb).resize(img.size, Image.NEAREST), (0, 0),
            Image.fromarray(hit).resize(img.size, Image.NEAREST))
  for s in (-1, 1):
    _ear(draw, cam, scene, identity, s, front=True)
  parts = face_model.face_parts(identity, actions, blink=blink, gaze=gaze, side=side)
  _draw_parts(draw, cam, scene, identity, parts, jaw_drop)
  if scene.occluder:
    _occlude(draw, cam, scene, identity, jaw_drop)
  img = img.reduce(canvas // size) if canvas != size else img
  if scene.blur > 0:
    img = img.filter(ImageFilter.GaussianBlur(scene.blur))
  return _camera_response(np.asarray(img, np.float32), scene, noise_rng)


def _camera_response(x: np.ndarray, scene: Scene, rng: np.random.Generator) -> np.ndarray:
  """Gain/colour cast, illumination ramp, gamma and Gaussian sensor noise."""
  n = x.shape[0]
  g = (np.arange(n) + 0.5) / n - 0.5
  ramp = 1 + scene.gradient[2] * (scene.gradient[0] * g[None, :, None]
                                  + scene.gradient[1] * g[:, None, None])
  x = np.clip(x * scene.gain * ramp / 255.0, 0.0, 1.0) ** scene.gamma * 255.0
  x = x + scene.noise_std * rng.standard_normal(x.shape, np.float32)
  return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
  """Encodes a `[H, W, 3]` uint8 image as PNG or JPEG (quality 90) bytes."""
  buf = io.BytesIO()
  if fmt == "PNG":
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
  elif fmt == "JPEG":
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
  else:
    raise ValueError(f"unknown image format {fmt!r}; expected PNG or JPEG")
  return buf.getvalue()
