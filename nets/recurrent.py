"""Recurrent cells and layers as pure functions over plain parameter dicts, run by lax.scan.

A cell is a pure step `cell(params, carry, x_t) -> (carry, h_t)` (`Cell.__call__`). Layers
split that step in two: the input projection x_t W + b, which does not depend on the carry
and is done for all time steps at once (one [B*T, D] x [D, G*H] matmul outside the scan),
and the recurrence h_{t-1} U (one fused [H, G*H] matmul for all G gates), which is all
the scan body has to do.

Backpropagation through time is a reverse scan of its own (`jax.custom_vjp`, the lectures'
derivation): per step, the cell's elementwise part is differentiated (by jax.vjp,
recomputed from the stored carry and h_{t-1} U; the LSTM's by hand, from local
derivatives its forward step kept, `Cell.update_vjp`) and dh_{t-1} += dz_t U^T; the
recurrent kernel's gradient sum_t h_{t-1}^T dz_t is then one [H, T*B] x [T*B, G*H]
matmul after the scan, where autodiff of the scan accumulates it step by step and stores
~2x the residuals. The input bias is added inside the step (with the gates' elementwise
work): as `x W + b` before the scan, XLA:CPU spent a separate pass on the add and ~16 ms
per LSTM layer on the [T*B, G*H] reduction of its gradient. Its gradient is a per-step
sum over the batch in the generic reverse scan, and one [1, T*B] x [T*B, G*H] product
after the LSTM's.

Parameters of a cell (Flax Dense naming, so weight penalties see the `kernel`s):
  {"input": {"kernel": [D, G*H], "bias": [G*H]}, "recurrent": {"kernel": [H, G*H]}}
(the GRU's "recurrent" also holds a "bias" [H] for its candidate, as Flax's nn.GRUCell).
Gate blocks along the G*H axis are in the order of `Cell.gates`. A carry is a dict of
[B, H] arrays that always holds the output "h" (LSTM adds the memory cell "c").

Padding: with per-example lengths, steps at t >= length leave the carry as it was and
output zeros, so the final carry is the one at the last valid step and valid outputs do
not depend on padding. The backward direction of a bidirectional layer reads each
sequence reversed within its length (`flip_sequences`), so it too starts at a real token.

A new cell (e.g. a GRU) is a `Cell` with its gate names and a recurrence function.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Params = dict
Carry = dict


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a jit cache key
class Cell:
  """One recurrent cell: gate layout, carry layout and the recurrence step."""

  name: str
  gates: tuple          # names of the G blocks of the fused projections, in order
  carry_keys: tuple     # the carry's [B, H] arrays; always includes "h"
  # (recurrent params, carry, xw_t, hu_t) -> (carry, h_t): the step's elementwise part,
  # given xw_t = x_t W + b and hu_t = h_{t-1} U (the recurrent params' "kernel" is U; the
  # update may use the others, e.g. the GRU's candidate bias).
  update: Callable[[Params, Carry, jax.Array, jax.Array], tuple]
  bias_init: dict = dataclasses.field(default_factory=dict)  # gate -> constant bias
  # Bias on the recurrent projection (GRU: b_hn sits inside r * (h U_n + b_hn)), [H].
  recurrent_bias: bool = False
  # Optional hand-written derivative, as a pair. `update_fwd`: (rec, carry, xw_t, hu_t) ->
  # (carry, h_t, residual), `update` plus what the derivative needs (any pytree);
  # `update_vjp`: (rec, residual, d_new_carry, dh_t) -> (dz_t, d_carry, d_rec), for cells
  # whose gates see z = x_t W + b + h_{t-1} U, so that dz is both x_t W's and h_{t-1} U's
  # cotangent (not the GRU's, whose r gates h U_n); the step's starting carry is not kept
  # for it. Without them BPTT keeps the carry and h_{t-1} U and differentiates `update`
  # with jax.vjp (the LSTM's written-out form is faster: README "Performance").
  update_fwd: Callable | None = None
  update_vjp: Callable | None = None

  def __post_init__(self):
    if (self.update_fwd is None) != (self.update_vjp is None):
      raise ValueError(f"cell {self.name}: update_fwd and update_vjp come as a pair")

  @property
  def hand_written_vjp(self) -> bool:
    return self.update_vjp is not None

  @property
  def num_gates(self) -> int:
    return len(self.gates)

  def recurrence(self, params: Params, carry: Carry, xw_BxGH):
    """One step from projected inputs: (carry, h_t)."""
    rec = params["recurrent"]
    return self.update(rec, carry, xw_BxGH, carry["h"] @ rec["kernel"])

  def __call__(self, params: Params, carry: Carry, x_BxD):
    """The plain cell step on raw inputs: (carry, h_t)."""
    return self.recurrence(params, carry, project_inputs(params, x_BxD))

  def zero_carry(self, batch_size: int, hidden_size: int, dtype=jnp.float32) -> Carry:
    return {k: jnp.zeros((batch_size, hidden_size), dtype) for k in self.carry_keys}

  def init(self, rng, input_size: int, hidden_size: int) -> Params:
    """Input kernel LeCun-normal, recurrent kernel orthogonal per gate (as Flax's cells),
    bias zero except the constants in `bias_init` (LSTM forget gate: 1)."""
    input_rng, recurrent_rng = jax.random.split(rng)
    G, H = self.num_gates, hidden_size
    input_kernel = nn.initializers.lecun_normal()(input_rng, (input_size, G * H))
    recurrent_kernel = jnp.concatenate(
        [nn.initializers.orthogonal()(r, (H, H)) for r in jax.random.split(recurrent_rng, G)],
        axis=1)
    bias = jnp.concatenate([jnp.full((H,), self.bias_init.get(g, 0.0)) for g in self.gates])
    recurrent = {"kernel": recurrent_kernel}
    if self.recurrent_bias:
      recurrent["bias"] = jnp.zeros((H,))
    return {"input": {"kernel": input_kernel, "bias": bias}, "recurrent": recurrent}


def project_inputs(params: Params, x_xD):
  """x W + b for any leading axes: [..., D] -> [..., G*H]."""
  return x_xD @ params["input"]["kernel"] + params["input"]["bias"]


def _gate_blocks(z_BxGH, num_gates: int):
  """[B, G*H] -> [B, G, H]: gate k is block [:, k]."""
  return z_BxGH.reshape(z_BxGH.shape[0], num_gates, -1)


def elman_update(rec: Params, carry: Carry, xw_BxH, hu_BxH):
  """Elman (1990): h_t = tanh(x_t W + b + h_{t-1} U)."""
  del rec, carry
  h = jnp.tanh(xw_BxH + hu_BxH)
  return {"h": h}, h


# The LSTM's gate pre-activations scaled so that one tanh gives every gate:
# sigmoid(z) = (tanh(z / 2) + 1) / 2 for i, f, o; tanh(z) for g. Order i, f, g, o.
_LSTM_TANH_SCALE = np.array([0.5, 0.5, 1.0, 0.5], np.float32)[:, None]


def lstm_update_fwd(rec: Params, carry: Carry, xw_Bx4H, hu_Bx4H):
  """LSTM (Hochreiter & Schmidhuber 1997, with forget gate): gates i, f, g, o from one
  fused matmul; c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t).

  Gates are blocks of a [B, 4, H] view, not slices of the last axis: XLA:CPU vectorizes
  along the minor axis, and slicing across it made the step's elementwise work ~3x slower.
  Residual for `lstm_update_vjp`: every local derivative the backward step needs, computed
  here where the gates are at hand, so that the reverse scan does no transcendental work
  (XLA:CPU left that scan's elementwise fusions unvectorized when they recomputed gates).
  """
  del rec
  a_Bx4xH = jnp.tanh(_gate_blocks(xw_Bx4H + hu_Bx4H, 4) * _LSTM_TANH_SCALE)
  sig_Bx4xH = 0.5 * a_Bx4xH + 0.5
  i, f, g, o = sig_Bx4xH[:, 0], sig_Bx4xH[:, 1], a_Bx4xH[:, 2], sig_Bx4xH[:, 3]
  c = f * carry["c"] + i * g
  tanh_c = jnp.tanh(c)
  h = o * tanh_c
  # dz = [dc, dc, dc, dh] * dz/dgate for i, f, g, o, with dc = dc_t + dh * dc/dh; and
  # dc_{t-1} = dc * f. Three arrays, not one [B, 6, H]: a backward fusion that read two
  # blocks of one dynamically sliced array reloaded the slice index per element and was
  # not vectorized (lstm_lm step ~180 -> ~163 ms).
  dz_dgate_Bx4xH = jnp.stack([g * i * (1.0 - i), carry["c"] * f * (1.0 - f),
                              i * (1.0 - g * g), tanh_c * o * (1.0 - o)], axis=1)
  return {"c": c, "h": h}, h, (dz_dgate_Bx4xH, o * (1.0 - tanh_c * tanh_c), f)


def lstm_update(rec: Params, carry: Carry, xw_Bx4H, hu_Bx4H):
  """`lstm_update_fwd` without the residual (XLA drops the unused work)."""
  return lstm_update_fwd(rec, carry, xw_Bx4H, hu_Bx4H)[:2]


_IS_O_GATE = np.array([False, False, False, True])[:, None]


def lstm_update_vjp(rec: Params, residual, d_new_carry: Carry, dh_BxH):
  """`lstm_update`'s derivative, from the local derivatives `lstm_update_fwd` kept: with
  dh = dh_t (carry) + dh_t (output), dc = dc_t + dh o (1 - tanh(c_t)^2); dz for gates
  i, f, g from dc and for o from dh; dc_{t-1} = dc f. dz is z = xw + hu's cotangent."""
  del rec
  dh = d_new_carry["h"] + dh_BxH
  dz_dgate_Bx4xH, dc_dh, f = residual
  dc = d_new_carry["c"] + dh * dc_dh
  # A select, not a stack of four products: the stack's concatenate was a scalar loop.
  dz_Bx4xH = jnp.where(_IS_O_GATE, dh[:, None], dc[:, None]) * dz_dgate_Bx4xH
  dz_Bx4H = dz_Bx4xH.reshape(dz_Bx4xH.shape[0], -1)
  return dz_Bx4H, {"c": dc * f, "h": jnp.zeros_like(dh)}, {}


def gru_update(rec: Params, carry: Carry, xw_Bx3H, hu_Bx3H):
  """GRU (Cho et al. 2014) as Flax's nn.GRUCell: gates r, z and candidate n from one fused
  matmul h_{t-1} U; n = tanh(x W_n + b_n + r * (h U_n + b_hn)), h_t = (1-z) n + z h_{t-1}."""
  xw_Bx3xH, hu_Bx3xH = _gate_blocks(xw_Bx3H, 3), _gate_blocks(hu_Bx3H, 3)
  rz_Bx2xH = jax.nn.sigmoid(xw_Bx3xH[:, :2] + hu_Bx3xH[:, :2])  # blocks: see lstm_update_fwd
  r, z = rz_Bx2xH[:, 0], rz_Bx2xH[:, 1]
  n = jnp.tanh(xw_Bx3xH[:, 2] + r * (hu_Bx3xH[:, 2] + rec["bias"]))
  h = (1.0 - z) * n + z * carry["h"]
  return {"h": h}, h


ELMAN = Cell("elman", gates=("h",), carry_keys=("h",), update=elman_update)
# Forget bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): remember by default early on.
LSTM = Cell("lstm", gates=("i", "f", "g", "o"), carry_keys=("c", "h"), update=lstm_update,
            bias_init={"f": 1.0}, update_fwd=lstm_update_fwd, update_vjp=lstm_update_vjp)
GRU = Cell("gru", gates=("r", "z", "n"), carry_keys=("h",), update=gru_update,
           recurrent_bias=True)
CELLS = {"elman": ELMAN, "lstm": LSTM, "gru": GRU}


def hidden_size(params: Params) -> int:
  return params["recurrent"]["kernel"].shape[0]


def length_mask(lengths_B, T: int):
  """[B, T] bool: True at the valid steps t < length."""
  return jnp.arange(T)[None, :] < lengths_B[:, None]


def flip_sequences(x_BxTx, lengths_B):
  """Reverses each sequence within its length; padding stays at the end.

  Like flax examples/sst2 `flip_sequences`: [a b c PAD] with length 3 -> [c b a PAD].
  Applying it twice gives the input back.
  """
  T = x_BxTx.shape[1]
  t_T = jnp.arange(T)
  idx_BxT = jnp.where(t_T[None, :] < lengths_B[:, None],
                      lengths_B[:, None] - 1 - t_T[None, :], t_T[None, :])
  idx = idx_BxT.reshape(idx_BxT.shape + (1,) * (x_BxTx.ndim - 2))
  return jnp.take_along_axis(x_BxTx, idx, axis=1)


def scan_groups(requested: int, cell: Cell, batch_size: int) -> int:
  """Blocks of rows a layer's scan updates as independent chains (`_local_bptt_scan`):
  `requested`, where 0 means 2 on the CPU and 1 elsewhere; 1 for cells without a
  hand-written derivative and where the blocks would not divide the batch."""
  groups = requested or (2 if jax.default_backend() == "cpu" else 1)
  if not cell.hand_written_vjp or batch_size % groups:
    return 1
  return groups


def run_layer(cell: Cell, params: Params, x_BxTxD, carry: Carry | None = None,
              mask_BxT=None, unroll: int = 1, custom_bptt: bool = True, xw_TxBxGH=None,
              groups: int = 1):
  """One layer over time: (final carry, outputs [B, T, H]).

  With `mask_BxT`, invalid steps keep the carry and output zeros. `custom_bptt=False`
  differentiates the scan by plain autodiff (the reference the tests compare with).
  `xw_TxBxGH`: the inputs' projection x_t W, already computed (see `embed_projected`);
  x_BxTxD is then not read. `groups`: see `scan_groups` (same results up to rounding).
  """
  if xw_TxBxGH is None:
    # Hoisted: every step's x_t W in one matmul, time-major for the scan (+ b in the step).
    project = time_major_projection if custom_bptt else _time_major_product
    xw_TxBxGH = project(x_BxTxD, params["input"]["kernel"])
  B = xw_TxBxGH.shape[1]
  if carry is None:
    carry = cell.zero_carry(B, hidden_size(params), xw_TxBxGH.dtype)
  valid_TxB = None if mask_BxT is None else jnp.swapaxes(mask_BxT, 0, 1)
  masked = valid_TxB is not None
  if not custom_bptt:
    scan = functools.partial(_scan, cell, unroll, masked)
  elif cell.hand_written_vjp:
    scan = _local_bptt_scan(cell, unroll, masked, scan_groups(groups, cell, B))
  else:
    scan = _bptt_scan(cell, unroll, masked)
  kernel, rest = _split_step_params(params)
  carry, h_TxBxH = scan(kernel, rest, carry, xw_TxBxGH, valid_TxB)
  return carry, jnp.swapaxes(h_TxBxH, 0, 1)


def _split_step_params(params: Params):
  """(U, what else the step reads: the input bias and the other recurrent params).
  U's gradient is summed after the scan; the others' inside it."""
  rec = params["recurrent"]
  return rec["kernel"], {"input_bias": params["input"]["bias"],
                         "recurrent": {k: v for k, v in rec.items() if k != "kernel"}}


def _masked_update(cell: Cell, masked: bool, rest, carry, xw_BxGH, hu_BxGH, valid_B,
                   residual: bool = False):
  """The cell's step on valid rows; (carry, h_t) or, with `residual`, (carry, h_t, what
  backpropagation keeps of the step: `cell.update_fwd`'s residual, else h_{t-1} U)."""
  xw_BxGH = xw_BxGH + rest["input_bias"]
  if residual and cell.hand_written_vjp:
    new_carry, h_BxH, res = cell.update_fwd(rest["recurrent"], carry, xw_BxGH, hu_BxGH)
  else:
    (new_carry, h_BxH), res = cell.update(rest["recurrent"], carry, xw_BxGH, hu_BxGH), hu_BxGH
  if masked:
    valid_Bx1 = valid_B[:, None]
    new_carry = jax.tree.map(lambda new, old: jnp.where(valid_Bx1, new, old), new_carry,
                             carry)
    h_BxH = jnp.where(valid_Bx1, h_BxH, 0.0)
  return (new_carry, h_BxH, res) if residual else (new_carry, h_BxH)


def _masked_update_vjp(cell: Cell, masked: bool, rest, res, valid_B, d_new_carry, dh_BxH):
  """`_masked_update`'s derivative from `cell.update_vjp`: a step outside a sequence's
  length passes the carry's cotangent through and receives none itself."""
  if masked:
    valid_Bx1 = valid_B[:, None]
    d_kept = jax.tree.map(lambda d: jnp.where(valid_Bx1, 0.0, d), d_new_carry)
    d_new_carry = jax.tree.map(lambda d: jnp.where(valid_Bx1, d, 0.0), d_new_carry)
    dh_BxH = jnp.where(valid_Bx1, dh_BxH, 0.0)
  dz, d_carry, d_rec = cell.update_vjp(rest["recurrent"], res, d_new_carry, dh_BxH)
  if masked:
    d_carry = jax.tree.map(jnp.add, d_carry, d_kept)
  return dz, d_carry, d_rec


def _scan(cell, unroll, masked, kernel, rest, carry, xw_TxBxGH, valid_TxB, residuals=False):
  """The forward scan: (final carry, h [T, B, H]); with `residuals` (for `_bptt_scan`),
  per step also the carry it started from and its residual (`_masked_update`)."""
  def step(carry, inputs):
    xw_BxGH, valid_B = inputs
    hu_BxGH = carry["h"] @ kernel
    out = _masked_update(cell, masked, rest, carry, xw_BxGH, hu_BxGH, valid_B, residuals)
    if not residuals:
      return out[0], out[1]
    return out[0], (out[1], carry, out[2])
  return jax.lax.scan(step, carry, (xw_TxBxGH, valid_TxB), unroll=unroll)


@functools.lru_cache(maxsize=None)
def _bptt_scan(cell: Cell, unroll: int, masked: bool):
  """`_scan` with backpropagation through time as its own reverse scan (module docstring),
  for cells without `update_vjp`: each step recomputed from x_t W and its starting carry
  and differentiated by jax.vjp."""

  @jax.custom_vjp
  def scan(kernel, rest, carry, xw_TxBxGH, valid_TxB):
    return _scan(cell, unroll, masked, kernel, rest, carry, xw_TxBxGH, valid_TxB)

  def forward(kernel, rest, carry, xw_TxBxGH, valid_TxB):
    final, (h_TxBxH, prev_TxB, res_TxB) = _scan(
        cell, unroll, masked, kernel, rest, carry, xw_TxBxGH, valid_TxB, residuals=True)
    return (final, h_TxBxH), (kernel, rest, valid_TxB, res_TxB, xw_TxBxGH, prev_TxB)

  def backward(residuals, cotangents):
    kernel, rest, valid_TxB, res_TxB, xw_TxBxGH, prev_TxB = residuals
    d_final, dh_TxBxH = cotangents
    kernel_T = kernel.T

    def step(state, inputs):
      d_carry, d_rest = state
      xw_BxGH, valid_B, prev, hu_BxGH, dh_BxH = inputs
      _, vjp = jax.vjp(
          lambda xw, hu, prev, rest: _masked_update(cell, masked, rest, prev, xw, hu,
                                                    valid_B),
          xw_BxGH, hu_BxGH, prev, rest)
      dxw_BxGH, dhu_BxGH, d_prev, d_rest_t = vjp((d_carry, dh_BxH))
      d_prev = dict(d_prev, h=d_prev["h"] + dhu_BxGH @ kernel_T)
      return (d_prev, jax.tree.map(jnp.add, d_rest, d_rest_t)), (dxw_BxGH, dhu_BxGH)

    (d_carry, d_rest), (dxw_TxBxGH, dhu_TxBxGH) = jax.lax.scan(
        step, (d_final, jax.tree.map(jnp.zeros_like, rest)),
        (xw_TxBxGH, valid_TxB, prev_TxB, res_TxB, dh_TxBxH), reverse=True, unroll=unroll)
    # h_{t-1} is the carry each step started from (the same buffer, not a copy)
    d_kernel = jnp.einsum("tbh,tbg->hg", prev_TxB["h"], dhu_TxBxGH)
    d_valid = None if valid_TxB is None else np.zeros(valid_TxB.shape, jax.dtypes.float0)
    return d_kernel, d_rest, d_carry, dxw_TxBxGH, d_valid

  scan.defvjp(forward, backward)
  return scan


def _reverse_step(cell: Cell, masked: bool, rest, kernel_T, dz_next_BxGxH, d_carry,
                  valid_B, res, dh_BxH):
  """One step of the reverse scan for `cell.update_vjp`: (dz_t [B, G, H], the cotangent of
  the carry before the step, the step's cotangent of the other recurrent params)."""
  dh_rec = dz_next_BxGxH.reshape(dz_next_BxGxH.shape[0], -1) @ kernel_T
  d_carry = dict(d_carry, h=dh_rec + d_carry["h"] if masked else dh_rec)
  dz_BxGH, d_prev, d_rec = _masked_update_vjp(cell, masked, rest, res, valid_B, d_carry,
                                              dh_BxH)
  if not masked:  # update_vjp's h cotangent is all in dz (zero here)
    d_prev = {k: v for k, v in d_prev.items() if k != "h"}
  return dz_BxGH.reshape(dz_next_BxGxH.shape), d_prev, d_rec


def _rows(tree, groups: int, axis: int = 0) -> list:
  """A pytree of arrays with the batch on `axis` as `groups` pytrees of equal row blocks
  (None: `groups` Nones)."""
  if tree is None:
    return [None] * groups
  b = jax.tree.leaves(tree)[0].shape[axis] // groups
  return [jax.tree.map(lambda a, g=g: jax.lax.slice_in_dim(a, g * b, (g + 1) * b, axis=axis),
                       tree) for g in range(groups)]


def _cat_rows(trees: list):
  return jax.tree.map(lambda *a: jnp.concatenate(a), *trees)


@functools.lru_cache(maxsize=None)
def _local_bptt_scan(cell: Cell, unroll: int, masked: bool, groups: int):
  """`_scan` with backpropagation through time as its own reverse scan, for a cell with
  `update_vjp`: the reverse step starts from the local derivatives the forward step kept.

  The reverse scan's carry is dz_{t+1} itself, and a step begins with dh_t = dz_{t+1} U^T:
  dz_t is then made by one fusion that feeds both the stacked output and the next step's
  matmul (with the matmul at the step's end, XLA:CPU computed dz twice, once per
  consumer). Under a length mask the carry also holds the h cotangent that invalid steps
  pass through unchanged. h_{t-1} for U's gradient is the outputs shifted by one step
  (under a length mask an output is zeroed where the carry is kept, but only at steps
  after the last valid one, whose dz is zero).

  `groups` (`scan_groups`): the batch as that many blocks of rows that every step updates
  as independent chains, matmul then elementwise work per block. With several chains
  ready at once XLA:CPU's thunk executor runs them on both cores, where one chain's small
  matmul could not use the second core well (README "Performance"). Each block is its own
  stream of scan inputs, outputs and residuals, not rows of one [T, B, ...] array sliced
  per step: fusions reading row slices of a dynamically sliced array came out
  unvectorized."""

  def run(kernel, rest, carry, xw_TxBxGH, valid_TxB, residuals):
    def step(carries, inputs):
      outs = [_masked_update(cell, masked, rest, c, xw, c["h"] @ kernel, valid, residuals)
              for c, xw, valid in zip(carries, *inputs)]
      return [o[0] for o in outs], [o[1:] for o in outs]
    finals, ys = jax.lax.scan(
        step, _rows(carry, groups),
        (_rows(xw_TxBxGH, groups, axis=1), _rows(valid_TxB, groups, axis=1)), unroll=unroll)
    return _cat_rows(finals), ys

  @jax.custom_vjp
  def scan(kernel, rest, carry, xw_TxBxGH, valid_TxB):
    final, ys = run(kernel, rest, carry, xw_TxBxGH, valid_TxB, residuals=False)
    return final, jnp.concatenate([y[0] for y in ys], axis=1)

  def forward(kernel, rest, carry, xw_TxBxGH, valid_TxB):
    final, ys = run(kernel, rest, carry, xw_TxBxGH, valid_TxB, residuals=True)
    h_blocks = [y[0] for y in ys]
    # h_{t-1} per block for U's gradient: the outputs shifted by one step (docstring)
    prev_h_blocks = [jnp.concatenate([h0[None], h[:-1]])
                     for h0, h in zip(_rows(carry["h"], groups), h_blocks)]
    return ((final, jnp.concatenate(h_blocks, axis=1)),
            (kernel, rest, valid_TxB, [y[1] for y in ys], prev_h_blocks))

  def backward(residuals, cotangents):
    kernel, rest, valid_TxB, res_blocks, prev_h_blocks = residuals
    d_final, dh_TxBxH = cotangents
    kernel_T = kernel.T
    if not masked:
      dh_TxBxH = dh_TxBxH.at[-1].add(d_final["h"])
    d_carry = d_final if masked else {k: v for k, v in d_final.items() if k != "h"}

    def step(state, inputs):
      dz_nexts, d_carries, d_rec = state
      outs = [_reverse_step(cell, masked, rest, kernel_T, dz, dc, *x)
              for dz, dc, x in zip(dz_nexts, d_carries, zip(*inputs))]
      # The input bias's gradient is summed after the scan: summed here per block, XLA
      # fused each sum with dz's computation into one slow loop.
      d_rec = functools.reduce(lambda acc, o: jax.tree.map(jnp.add, acc, o[2]), outs, d_rec)
      dz_blocks = [o[0] for o in outs]
      return (dz_blocks, [o[1] for o in outs], d_rec), dz_blocks

    H, b = kernel.shape[0], dh_TxBxH.shape[1] // groups
    dz_last = jnp.zeros((b, cell.num_gates, H), kernel.dtype)
    (dz_firsts, d_carries, d_rec), dz_blocks = jax.lax.scan(
        step, ([dz_last] * groups, _rows(d_carry, groups),
               jax.tree.map(jnp.zeros_like, rest["recurrent"])),
        (_rows(valid_TxB, groups, axis=1), res_blocks, _rows(dh_TxBxH, groups, axis=1)),
        reverse=True, unroll=unroll)
    d_carry = _cat_rows(d_carries)
    dh_first = jnp.concatenate([dz.reshape(b, -1) @ kernel_T for dz in dz_firsts])
    d_carry = dict(d_carry, h=dh_first + d_carry["h"] if masked else dh_first)
    dz_blocks = [dz.reshape(dz.shape[:2] + (-1,)) for dz in dz_blocks]
    d_kernel = sum(_time_batch_contraction(h, dz) for h, dz in zip(prev_h_blocks, dz_blocks))
    d_bias = sum(jnp.ones((dz.shape[0] * b,), dz.dtype) @ dz.reshape(-1, dz.shape[-1])
                 for dz in dz_blocks)
    d_valid = None if valid_TxB is None else np.zeros(valid_TxB.shape, jax.dtypes.float0)
    return (d_kernel, {"input_bias": d_bias, "recurrent": d_rec}, d_carry,
            jnp.concatenate(dz_blocks, axis=1), d_valid)

  scan.defvjp(forward, backward)
  return scan


def _time_batch_contraction(a_TxBxH, b_TxBxG):
  """sum_t a_t^T b_t: [H, G], as one [H, T*B] x [T*B, G] matmul on time-major rows. For the
  LSTM's kernel gradient: as an einsum over t and b, XLA:CPU laid both operands out
  batch-major first, transposing the [T, B, 4H] dz (16 MB in the LSTM LM) per layer
  (lstm_lm step 186 -> 178 ms, 3 alternating pairs). The generic path keeps the einsum:
  this form made the Elman LM's step ~5% slower (24.6 -> 26.0 ms)."""
  return a_TxBxH.reshape(-1, a_TxBxH.shape[-1]).T @ b_TxBxG.reshape(-1, b_TxBxG.shape[-1])


def _time_major_product(x_BxTxD, kernel_DxG):
  return jnp.swapaxes(x_BxTxD, 0, 1) @ kernel_DxG


@jax.custom_vjp
def time_major_projection(x_BxTxD, kernel_DxG):
  """Every step's x_t W at once, time-major [T, B, G], with the kernel's gradient as one
  [D, T*B] x [T*B, G] matmul (`_time_batch_contraction`). By autodiff, XLA:CPU copied the
  [T, B, G] cotangent transposed (16 MB per LSTM LM layer) for an Eigen dot, and the
  layer below's reverse scan waited ~9 ms on that dot (profiled): lstm_lm step 151.0 ->
  141.1 and 151.7 -> 142.6 ms (medians of 5 alternating runs); a 2-layer bidirectional
  classifier (batch 50, 52 steps, 300 -> 150, masked), forward + backward: LSTM 128.6 ->
  120.4, GRU 138.8 -> 133.2, Elman 45.4 -> 43.9 ms."""
  return _time_major_product(x_BxTxD, kernel_DxG)


def _time_major_projection_fwd(x_BxTxD, kernel_DxG):
  x_TxBxD = jnp.swapaxes(x_BxTxD, 0, 1)
  return x_TxBxD @ kernel_DxG, (x_TxBxD, kernel_DxG)


def _time_major_projection_bwd(residuals, d_TxBxG):
  x_TxBxD, kernel_DxG = residuals
  return (jnp.swapaxes(d_TxBxG @ kernel_DxG.T, 0, 1),
          _time_batch_contraction(x_TxBxD, d_TxBxG))


time_major_projection.defvjp(_time_major_projection_fwd, _time_major_projection_bwd)


def embed_projected(table_VxE, params: Params, tokens_BxT):
  """A first layer's x_t W for embedded tokens, time-major [T, B, G*H], as rows of the
  table projected once: (E W)[y] = E[y] W. When the vocabulary is smaller than the batch's
  positions (characters: 65 rows against 32 x 128), the [V, E] x [E, G*H] matmul and a
  gather replace the [B*T, E] x [E, G*H] one, and the gradient is a scatter-add into V
  rows (char LM shapes, in isolation: forward + backward 17.7 -> 1.5 ms)."""
  # Token ids are the vocabulary's, so "clip" (XLA's own gather semantics) changes none;
  # the default "fill" cost a [T, B, G*H] select.
  return jnp.take(table_VxE @ params["input"]["kernel"], tokens_BxT.T, axis=0, mode="clip")


def layer_name(index: int) -> str:
  return f"layer{index}"


def init_stack(cell: Cell, rng, input_size: int, hidden_size: int, num_layers: int,
               bidirectional: bool = False) -> Params:
  """{"layer0": {"forward": cell params[, "backward": ...]}, "layer1": ...}."""
  directions = ("forward", "backward") if bidirectional else ("forward",)
  params = {}
  for layer, layer_rng in enumerate(jax.random.split(rng, num_layers)):
    size = input_size if layer == 0 else hidden_size * len(directions)
    params[layer_name(layer)] = {
        d: cell.init(r, size, hidden_size)
        for d, r in zip(directions, jax.random.split(layer_rng, len(directions)))}
  return params


def zero_stack_carry(cell: Cell, params: Params, batch_size: int) -> dict:
  """The all-zero carry of a stack: the same layout as `run_stack`'s final carry."""
  return {name: {d: cell.zero_carry(batch_size, hidden_size(p)) for d, p in layer.items()}
          for name, layer in params.items()}


def dropout(x, rate: float, rng):
  """Inverted dropout (identity when rate is 0 or rng is None)."""
  if not rate or rng is None:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def run_stack(cell: Cell, params: Params, x_BxTxD, *, carry: dict | None = None,
              lengths_B=None, dropout_rate: float = 0.0, rng=None, unroll: int = 1,
              first_xw_TxBxGH=None, groups: int = 1):
  """Layers on top of each other: (final carry per layer and direction, top outputs).

  Each layer runs over the whole sequence before the next one starts, so every layer's
  input projection is hoisted. A bidirectional layer concatenates its forward and
  backward outputs [B, T, 2H] as the next layer's input. Dropout (with `rng`, i.e. in
  training) applies to the inputs of layers 2.., never to the recurrent connections
  (Zaremba et al. 2014). `first_xw_TxBxGH`: the first layer's input projection, already
  computed (`embed_projected`; unidirectional stacks), in place of x_BxTxD. `groups`:
  each layer's `run_layer` groups.
  """
  num_layers = len(params)
  if first_xw_TxBxGH is not None and len(params[layer_name(0)]) > 1:
    raise ValueError("first_xw_TxBxGH is for unidirectional stacks")
  if carry is None:
    B = x_BxTxD.shape[0] if first_xw_TxBxGH is None else first_xw_TxBxGH.shape[1]
    carry = zero_stack_carry(cell, params, B)
  T = x_BxTxD.shape[1] if first_xw_TxBxGH is None else first_xw_TxBxGH.shape[0]
  mask_BxT = None if lengths_B is None else length_mask(lengths_B, T)
  new_carry = {}
  for layer in range(num_layers):
    name = layer_name(layer)
    if layer > 0:
      x_BxTxD = dropout(x_BxTxD, dropout_rate,
                        None if rng is None else jax.random.fold_in(rng, layer))
    layer_carry, outputs = {}, []
    for direction in _directions(params[name]):
      p = params[name][direction]
      if direction == "forward":
        layer_carry[direction], h = run_layer(
            cell, p, x_BxTxD, carry[name][direction], mask_BxT, unroll,
            xw_TxBxGH=first_xw_TxBxGH if layer == 0 else None, groups=groups)
      else:  # backward: read each sequence reversed within its length, then flip back
        if lengths_B is None:
          lengths_B = jnp.full(x_BxTxD.shape[:1], x_BxTxD.shape[1])
          mask_BxT = length_mask(lengths_B, x_BxTxD.shape[1])
        layer_carry[direction], h = run_layer(
            cell, p, flip_sequences(x_BxTxD, lengths_B), carry[name][direction], mask_BxT,
            unroll, groups=groups)
        h = flip_sequences(h, lengths_B)
      outputs.append(h)
    new_carry[name] = layer_carry
    x_BxTxD = jnp.concatenate(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
  return new_carry, x_BxTxD


def top_state(carry: dict):
  """The top layer's final outputs h, forward and backward concatenated: [B, H or 2H]."""
  top = carry[layer_name(len(carry) - 1)]
  return jnp.concatenate([top[d]["h"] for d in _directions(top)], axis=-1)


def _directions(layer: dict) -> list:
  # Fixed order: pytrees come back from jit and checkpoints with sorted dict keys.
  return [d for d in ("forward", "backward") if d in layer]
