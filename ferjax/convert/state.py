"""Converted weights, their match against an NNX model, and writing them in.

A converter turns a checkpoint into `Converted`: arrays already in ferjax
layout, keyed by their NNX path inside the module they were made for
(`"layer1/0/conv1/kernel"` in a `ResNet`). `match` lines them up with the
variables of a model, under the path (`root`) of that module inside it, and
sorts every key into a `LoadReport`; `load_converted` then writes the matched
arrays with `nnx.update`, strictly (everything must match) or partially.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Path = tuple[str | int, ...]


def path_key(path: Path) -> str:
  """NNX path -> the '/'-joined key used by converters and saved checkpoints."""
  return "/".join(str(part) for part in path)


@dataclasses.dataclass
class Converted:
  """A checkpoint in ferjax layout.

  Attributes:
    family: the module class the keys are relative to: "resnet" (a
      `ferjax.models.resnet.ResNet`) or "lstpnet" (`ferjax.models.lstpnet.LSTPNet`).
    arrays: target key -> (source key, array in ferjax layout).
    unexpected: source key -> its shape, for keys with no ferjax counterpart.
    dropped: source keys with no counterpart by design (BN `num_batches_tracked`,
      copies of tied weights that were checked equal to the kept copy).
  """

  family: str
  arrays: dict[str, tuple[str, np.ndarray]]
  unexpected: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
  dropped: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Row:
  """One key of a load: a source array and/or a model variable ('' / None when absent).

  Both shapes are in ferjax layout (a converted conv kernel is HWIO).
  """

  source: str
  target: str
  source_shape: tuple[int, ...] | None
  target_shape: tuple[int, ...] | None


def _shape(shape: tuple[int, ...] | None) -> str:
  return "-" if shape is None else str(tuple(shape))


@dataclasses.dataclass
class LoadReport:
  """What a load did with every key.

  Attributes:
    source: the file or directory read.
    target: the model class and the submodule written into.
    partial: whether mismatches were allowed (else any of them is an error).
    matched: keys loaded.
    skipped: source arrays whose model variable has another shape (e.g. a
      1000-class head for a 7-class model); not loaded.
    missing: model variables no source array was found for; they keep their
      initial values.
    unexpected: source arrays with no model variable.
    dropped: source keys with no counterpart by design (see `Converted`).
  """

  source: str
  target: str
  partial: bool
  matched: list[Row] = dataclasses.field(default_factory=list)
  skipped: list[Row] = dataclasses.field(default_factory=list)
  missing: list[Row] = dataclasses.field(default_factory=list)
  unexpected: list[Row] = dataclasses.field(default_factory=list)
  dropped: list[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    """True when every model variable was filled from a source array of its shape."""
    return not (self.skipped or self.missing or self.unexpected)

  def summary(self) -> str:
    """One line: source -> target and the count of each kind of key."""
    mode = "partial" if self.partial else "strict"
    return (f"{self.source} -> {self.target} ({mode}): {len(self.matched)} matched, "
            f"{len(self.skipped)} skipped (shape), {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.dropped)} dropped")

  def error_line(self) -> str:
    """One line naming the count and first key of each kind of mismatch."""
    parts = []
    if self.skipped:
      r = self.skipped[0]
      parts.append(f"{len(self.skipped)} skipped for their shape, e.g. {r.source} "
                   f"{_shape(r.source_shape)} vs {r.target} {_shape(r.target_shape)}")
    if self.missing:
      r = self.missing[0]
      parts.append(f"{len(self.missing)} missing, e.g. {r.target} {_shape(r.target_shape)}")
    if self.unexpected:
      r = self.unexpected[0]
      parts.append(f"{len(self.unexpected)} unexpected, e.g. {r.source} "
                   f"{_shape(r.source_shape)}")
    return f"{self.source} does not load strictly into {self.target}: {'; '.join(parts)}"

  def table(self, *, verbose: bool = False) -> str:
    """The summary, then one row per key that did not load (all keys if verbose)."""
    groups = [("skipped", self.skipped), ("missing", self.missing),
              ("unexpected", self.unexpected)]
    if verbose:
      groups.insert(0, ("matched", self.matched))
    rows = [("status", "source key", "converted shape", "model variable", "model shape")]
    rows += [(status, r.source or "-", _shape(r.source_shape), r.target or "-",
              _shape(r.target_shape)) for status, group in groups for r in group]
    lines = [self.summary()]
    if len(rows) > 1:
      widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
      lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                for row in rows]
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.table()


class LoadError(ValueError):
  """A strict load found mismatches; `report` holds them all."""

  def __init__(self, report: LoadReport):
    super().__init__(report.error_line() + " (load partially to keep only what matches)")
    self.report = report


def _variables(model: nnx.Module) -> dict[str, tuple[Path, nnx.Variable]]:
  """The model's weights and statistics by key; RNG streams (dropout keys) are not weights."""
  state = nnx.state(model, nnx.Not(nnx.RngState))
  return {path_key(path): (path, var) for path, var in nnx.to_flat_state(state)}


def match(model: nnx.Module, converted: Converted, *, root: Path = (), source: str,
          partial: bool) -> LoadReport:
  """Sorts every source array and model variable into a `LoadReport`.

  Works on abstract models (`nnx.eval_shape`) too: only shapes are compared.
  `root` is the path of the submodule the converted keys are relative to.
  """
  variables = _variables(model)
  prefix = path_key(root) + "/" if root else ""
  target = type(model).__name__ + "".join(f".{part}" for part in root)
  report = LoadReport(source=source, target=target, partial=partial,
                      dropped=list(converted.dropped))
  report.unexpected += [Row(key, "", tuple(shape), None)
                        for key, shape in converted.unexpected.items()]
  seen = set()
  for key, (source_key, array) in converted.arrays.items():
    name = prefix + key
    if name not in variables:
      report.unexpected.append(Row(source_key, name, array.shape, None))
      continue
    seen.add(name)
    shape = tuple(variables[name][1].get_value().shape)
    row = Row(source_key, name, tuple(array.shape), shape)
    (report.matched if row.source_shape == shape else report.skipped).append(row)
  report.missing = [Row("", name, None, tuple(var.get_value().shape))
                    for name, (_, var) in sorted(variables.items()) if name not in seen]
  return report


def _placed(value: np.ndarray, old: jax.Array) -> jax.Array:
  """`value` as `old`'s dtype, laid out with `old`'s sharding (multi-host safe)."""
  value = np.asarray(value, dtype=old.dtype)
  if isinstance(old, jax.Array):
    return jax.make_array_from_callback(value.shape, old.sharding, lambda index: value[index])
  return jnp.asarray(value)


def load_converted(model: nnx.Module, converted: Converted, *, root: Path = (), source: str,
                   partial: bool) -> LoadReport:
  """Writes the matched arrays of `converted` into `model` (in place) and reports.

  Arrays take the dtype and sharding of the variable they replace.

  Raises:
    LoadError: when not `partial` and any key is skipped, missing or unexpected;
      the model is then left unchanged.
  """
  report = match(model, converted, root=root, source=source, partial=partial)
  if not partial and not report.ok:
    raise LoadError(report)
  variables = _variables(model)
  prefix_len = len(path_key(root)) + 1 if root else 0
  updates = {}
  for row in report.matched:
    path, var = variables[row.target]
    array = converted.arrays[row.target[prefix_len:]][1]
    updates[path] = var.replace(_placed(array, var.get_value()))
  nnx.update(model, nnx.from_flat_state(updates))
  return report
