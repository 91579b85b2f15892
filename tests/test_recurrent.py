"""Recurrent cells and layers (nets.recurrent) and the rnn / lstm sentence classifiers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nets import lstm, recurrent, rnn
from nets.data import datasets
from nets.trainer import Trainer, train_and_evaluate
from tests.conftest import assert_every_param_changed, tiny_config

CELLS = ["elman", "lstm"]
B, T, D, H = 3, 7, 5, 4


def setup(cell_name, seed=0, input_size=D, hidden=H):
  cell = recurrent.CELLS[cell_name]
  params = cell.init(jax.random.PRNGKey(seed), input_size, hidden)
  x_BxTxD = jax.random.normal(jax.random.PRNGKey(seed + 1), (B, T, input_size))
  return cell, params, x_BxTxD


@pytest.mark.parametrize("cell_name", CELLS)
def test_scan_equals_python_loop_over_the_cell(cell_name):
  cell, params, x = setup(cell_name)
  carry = cell.zero_carry(B, H)
  outputs = []
  for t in range(T):
    carry, h = cell(params, carry, x[:, t])
    outputs.append(h)
  scan_carry, scan_h = recurrent.run_layer(cell, params, x)
  np.testing.assert_allclose(scan_h, jnp.stack(outputs, axis=1), rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               scan_carry, carry)
  unrolled = recurrent.run_layer(cell, params, x, unroll=3)[1]
  np.testing.assert_allclose(unrolled, scan_h, rtol=1e-5, atol=1e-6)


def test_lstm_has_fused_gates_and_forget_bias_one():
  params = recurrent.LSTM.init(jax.random.PRNGKey(0), D, H)
  assert params["input"]["kernel"].shape == (D, 4 * H)
  assert params["recurrent"]["kernel"].shape == (H, 4 * H)
  np.testing.assert_array_equal(params["input"]["bias"][H:2 * H], 1.0)
  np.testing.assert_array_equal(params["input"]["bias"][:H], 0.0)


def test_flip_sequences_reverses_within_length():
  x = jnp.array([[1, 2, 3, 0], [4, 5, 6, 7], [8, 0, 0, 0]])
  lengths = jnp.array([3, 4, 1])
  flipped = recurrent.flip_sequences(x, lengths)
  np.testing.assert_array_equal(flipped, [[3, 2, 1, 0], [7, 6, 5, 4], [8, 0, 0, 0]])
  np.testing.assert_array_equal(recurrent.flip_sequences(flipped, lengths), x)


@pytest.mark.parametrize("cell_name", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_changes_neither_valid_outputs_nor_final_state(cell_name, bidirectional):
  cell = recurrent.CELLS[cell_name]
  params = recurrent.init_stack(cell, jax.random.PRNGKey(0), D, H, 2, bidirectional)
  x = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
  lengths = jnp.array([7, 4, 1])
  garbage = jax.random.normal(jax.random.PRNGKey(2), (B, T, D)) * 10
  padded = jnp.where(recurrent.length_mask(lengths, T)[..., None], x, garbage)
  carry, h = recurrent.run_stack(cell, params, padded, lengths_B=lengths)
  for b, n in enumerate(map(int, lengths)):
    alone_carry, alone_h = recurrent.run_stack(cell, params, x[b:b + 1, :n])
    np.testing.assert_allclose(h[b, :n], alone_h[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(h[b, n:], 0.0)
    jax.tree.map(lambda a, c: np.testing.assert_allclose(a[b], c[0], rtol=1e-5, atol=1e-6),
                 carry, alone_carry)


def first_step_gradient_ratio(cell_name, steps, seed=0):
  """|d h_T / d x_0| / |d h_T / d x_{T-1}|: how much gradient reaches the first step."""
  cell = recurrent.CELLS[cell_name]
  hidden = 32
  params = cell.init(jax.random.PRNGKey(seed), hidden, hidden)
  x = jax.random.normal(jax.random.PRNGKey(seed + 1), (1, steps, hidden))
  grads = jax.grad(lambda x: jnp.sum(recurrent.run_layer(cell, params, x)[0]["h"]))(x)
  norms = jnp.linalg.norm(grads[0], axis=-1)
  return float(norms[0] / norms[-1])


@pytest.mark.parametrize("cell_name", CELLS)
def test_gradients_reach_the_first_step(cell_name):
  cell, params, x = setup(cell_name)
  grads = jax.grad(lambda x: jnp.sum(recurrent.run_layer(cell, params, x)[0]["h"]))(x)
  assert np.all(np.abs(np.asarray(grads[:, 0])).sum(-1) > 0)


@pytest.mark.parametrize("cell_name", ["elman", "lstm", "gru"])
@pytest.mark.parametrize("masked", [False, True])
def test_bptt_reverse_scan_equals_autodiff_of_the_scan(cell_name, masked):
  """The hand-written backward pass (custom_vjp of the scan and of the hoisted input
  projection) gives autodiff's gradients for the parameters, the inputs and the initial
  carry, with and without padding."""
  cell, params, x = setup(cell_name)
  params = jax.tree.map(lambda p: p + 0.1, params)  # non-zero biases
  carry0 = {k: jax.random.normal(jax.random.PRNGKey(7), (B, H)) for k in cell.carry_keys}
  mask = recurrent.length_mask(jnp.array([T, 3, 0]), T) if masked else None

  def loss(params, x, carry0, custom_bptt):
    carry, h = recurrent.run_layer(cell, params, x, carry0, mask, custom_bptt=custom_bptt)
    return jnp.sum(jnp.sin(h)) + sum(jnp.sum(jnp.cos(c)) for c in carry.values())

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grad(params, x, carry0, True), grad(params, x, carry0, False))


@pytest.mark.parametrize("groups", [2, 4])
@pytest.mark.parametrize("masked", [False, True])
def test_lstm_scan_in_row_groups_equals_autodiff_of_the_scan(groups, masked):
  """The batch as independent blocks of rows (`scan_groups`): the outputs, final carry and
  gradients of plain autodiff through the ungrouped scan."""
  cell, batch = recurrent.LSTM, 8
  params = jax.tree.map(lambda p: p + 0.1, cell.init(jax.random.PRNGKey(0), D, H))
  x = jax.random.normal(jax.random.PRNGKey(1), (batch, T, D))
  carry0 = {k: jax.random.normal(jax.random.PRNGKey(7), (batch, H)) for k in cell.carry_keys}
  mask = (recurrent.length_mask(jnp.array([T, 3, 0, 1, T, 2, T - 1, 4]), T) if masked
          else None)

  def loss(params, x, carry0, groups, custom_bptt):
    carry, h = recurrent.run_layer(cell, params, x, carry0, mask, custom_bptt=custom_bptt,
                                   groups=groups)
    return (jnp.sum(jnp.sin(h)) + sum(jnp.sum(jnp.cos(c)) for c in carry.values()),
            (carry, h))

  grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True),
                 static_argnums=(3, 4))
  assert recurrent.scan_groups(groups, cell, batch) == groups
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               grad(params, x, carry0, groups, True), grad(params, x, carry0, 1, False))


def test_scan_groups_rule():
  on_cpu = jax.default_backend() == "cpu"
  assert recurrent.scan_groups(0, recurrent.LSTM, 32) == (2 if on_cpu else 1)
  assert recurrent.scan_groups(4, recurrent.LSTM, 32) == 4
  assert recurrent.scan_groups(4, recurrent.LSTM, 6) == 1  # does not divide the batch
  assert recurrent.scan_groups(2, recurrent.GRU, 32) == 1  # no hand-written derivative
  assert recurrent.scan_groups(1, recurrent.LSTM, 32) == 1


@pytest.mark.parametrize("cell_name", ["elman", "lstm"])
def test_embedding_table_projected_once_equals_projecting_each_position(cell_name):
  """embed_projected: (E W)[y] in place of E[y] W gives the stack's outputs, final carry
  and gradients (table, kernels) of the plain path."""
  cell = recurrent.CELLS[cell_name]
  V, E = 7, 5
  params = {"table": jax.random.normal(jax.random.PRNGKey(0), (V, E)),
            "rnn": recurrent.init_stack(cell, jax.random.PRNGKey(1), E, H, num_layers=2)}
  tokens = jax.random.randint(jax.random.PRNGKey(2), (B, T), 0, V)

  def loss(params, projected):
    first = recurrent.embed_projected(params["table"], params["rnn"]["layer0"]["forward"],
                                      tokens) if projected else None
    x = None if projected else jnp.take(params["table"], tokens, axis=0)
    carry, h = recurrent.run_stack(cell, params["rnn"], x, first_xw_TxBxGH=first)
    return jnp.sum(jnp.sin(h)) + jnp.sum(jnp.cos(carry["layer1"]["forward"]["h"])), h

  (value, h), grads = jax.value_and_grad(loss, has_aux=True)(params, True)
  (value_ref, h_ref), grads_ref = jax.value_and_grad(loss, has_aux=True)(params, False)
  np.testing.assert_allclose(h, h_ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(value, value_ref, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               grads, grads_ref)


def test_elman_gradients_vanish_faster_than_lstm():
  """The lectures' argument: through tanh(Uh) the gradient shrinks by a factor per step;
  the LSTM's additive cell path (forget gate near 1) loses much less."""
  steps = 60
  elman = np.mean([first_step_gradient_ratio("elman", steps, s) for s in range(3)])
  lstm_ratio = np.mean([first_step_gradient_ratio("lstm", steps, s) for s in range(3)])
  assert 0 < elman < 1e-3, elman
  assert np.log(lstm_ratio) > 0.5 * np.log(elman), (elman, lstm_ratio)  # half the decay
  assert lstm_ratio > 1e3 * elman


def flax_lstm_params(params, hidden):
  block = lambda a, g: a[..., g * hidden:(g + 1) * hidden]
  out = {}
  for g, name in enumerate("ifgo"):
    out[f"i{name}"] = {"kernel": block(params["input"]["kernel"], g)}
    out[f"h{name}"] = {"kernel": block(params["recurrent"]["kernel"], g),
                       "bias": block(params["input"]["bias"], g)}
  return out


def flax_simple_params(params):
  return {"i": {"kernel": params["input"]["kernel"], "bias": params["input"]["bias"]},
          "h": {"kernel": params["recurrent"]["kernel"]}}


@pytest.mark.parametrize("cell_name", CELLS)
def test_equals_flax_rnn_with_the_same_parameters(cell_name):
  cell, params, x = setup(cell_name)
  lengths = jnp.array([7, 5, 2])
  if cell_name == "lstm":
    flax_cell, flax_params = nn.LSTMCell(H), flax_lstm_params(params, H)
  else:
    flax_cell, flax_params = nn.SimpleCell(H), flax_simple_params(params)
  reference = nn.RNN(flax_cell, return_carry=True)
  shapes = jax.eval_shape(reference.init, jax.random.PRNGKey(0), x)["params"]["cell"]
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(jnp.shape, flax_params)
  flax_carry, flax_h = reference.apply({"params": {"cell": flax_params}}, x,
                                       seq_lengths=lengths)
  carry, h = recurrent.run_layer(cell, params, x, mask_BxT=recurrent.length_mask(lengths, T))
  valid = np.asarray(recurrent.length_mask(lengths, T))
  np.testing.assert_allclose(np.asarray(h)[valid], np.asarray(flax_h)[valid], rtol=1e-5,
                             atol=1e-6)
  ours = (carry["c"], carry["h"]) if cell_name == "lstm" else carry["h"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               ours, flax_carry)


# --- the classifiers --------------------------------------------------------------------

class Info:
  vocab_size, num_outputs, pretrained = 11, 3, None


@pytest.mark.parametrize("family,pooling", [(rnn, "final"), (lstm, "max"), (lstm, "mean")])
def test_classifier_shapes_finite_and_jit_equals_no_jit(family, pooling):
  config = rnn.Config(embed_dim=6, hidden_size=5, num_layers=2, bidirectional=True,
                      state_pooling=pooling, dropout=0.5)
  network = family.build(config, Info())
  params = network.init(jax.random.PRNGKey(0))
  batch = {"tokens": jnp.array([[3, 4, 5, 0], [6, 0, 0, 0]]), "length": jnp.array([3, 1])}
  logits = network.apply(params, batch)
  assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
  jitted = jax.jit(lambda p, b: network.apply(p, b))(params, batch)
  np.testing.assert_allclose(jitted, logits, rtol=1e-5, atol=1e-6)
  # Padding tokens beyond the length do not matter.
  other = {**batch, "tokens": batch["tokens"].at[1, 2].set(7)}
  np.testing.assert_allclose(network.apply(params, other), logits, rtol=1e-5, atol=1e-6)
  train_logits = network.apply(params, batch, train=True, rng=jax.random.PRNGKey(1))
  assert not np.allclose(train_logits, logits)  # dropout is on in training


def lstm_config(tmp_path, keyword_files, **kw):
  train, test = keyword_files
  model = rnn.Config(embed_dim=8, hidden_size=8, bidirectional=True, dropout=0.2)
  base = dict(model="lstm", model_config=model, optimizer="adam", learning_rate=0.01,
              grad_clip=5.0, max_norm=0.0)
  base.update(kw)
  return tiny_config(tmp_path, train, test, **base)


@pytest.mark.parametrize("sparse", [True, False])
def test_classifier_one_step_changes_every_parameter(tmp_path, keyword_files, sparse):
  cfg = lstm_config(tmp_path, keyword_files, optimizer="adagrad", learning_rate=0.1,
                    sparse_updates=sparse)
  trainer = Trainer(cfg, datasets.prepare(datasets.load_raw(cfg), cfg))
  state = trainer.initial_state()
  before = jax.device_get(state.params)
  state, metrics = trainer.train_step(state, next(trainer.batches(0)))
  assert_every_param_changed(before, state.params)
  assert np.isfinite(float(metrics["loss"]))


def test_lstm_classifier_learns_end_to_end(tmp_path, keyword_files):
  cfg = lstm_config(tmp_path / "run", keyword_files, num_epochs=8)
  summary = train_and_evaluate(cfg)
  assert summary["selected_on"] == "valid/accuracy"
  assert summary["test/accuracy"] > 0.85  # the keyword task is easy


def test_shared_option_names_are_one_flag_with_one_default():
  """A field name shared by families is one flag: the same type, default and help."""
  import dataclasses
  from nets import models
  seen = {}
  for name in ("textcnn", "rnn", "lstm", "rnn_lm", "lstm_lm"):
    for f in dataclasses.fields(models.get(name).Config):
      default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
      key = (type(default), default, f.metadata["help"])
      assert seen.setdefault(f.name, key) == key, f.name


def test_hand_written_derivative_comes_as_a_pair():
  with pytest.raises(ValueError, match="pair"):
    recurrent.Cell("half", gates=("h",), carry_keys=("h",), update=recurrent.elman_update,
                   update_fwd=recurrent.lstm_update_fwd)
