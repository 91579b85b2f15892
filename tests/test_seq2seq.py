"""Seq2seq with attention: the GRU cell, shapes, attention, causality, decoding, learning."""

import itertools
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from nets import recurrent, seq2seq, tasks
from nets.config import Config
from nets.data import translation
from nets.errors import ConfigError
from nets.trainer import Trainer, train_and_evaluate
from tests.conftest import assert_every_param_changed

WORDS = "a b c d e f g h".split()


class Info:
  def __init__(self, src=11, tgt=9):
    self.info = {"src_vocab_size": src, "tgt_vocab_size": tgt}


def tiny(**kw):
  base = dict(embed_dim=6, hidden_size=5, decoder_size=8, attention_size=7, num_layers=1,
              dropout=0.0)
  base.update(kw)
  return seq2seq.Config(**base)


def batch_of(src_BxS, tgt_BxT, src_length):
  B, S = src_BxS.shape
  T = tgt_BxT.shape[1]
  L = max(S, T)
  tokens = np.zeros((B, L, 2), np.int32)
  tokens[:, :S, 0], tokens[:, :T, 1] = src_BxS, tgt_BxT
  return {"tokens": tokens, "src_length": np.asarray(src_length, np.int32),
          "tgt_length": np.full((B,), T, np.int32), "length": np.full((B,), L, np.int32)}


# --- the GRU cell ---------------------------------------------------------------------------

def test_gru_cell_equals_flax_gru_cell_with_the_same_params():
  D, H, B = 3, 4, 2
  flax_cell = nn.GRUCell(features=H)
  x = jax.random.normal(jax.random.PRNGKey(0), (B, D))
  h0 = jax.random.normal(jax.random.PRNGKey(1), (B, H))
  fp = flax_cell.init(jax.random.PRNGKey(2), h0, x)["params"]
  fp = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(3), a.shape), fp)
  ours = {"input": {"kernel": jnp.concatenate([fp[g]["kernel"] for g in ("ir", "iz", "in")], 1),
                    "bias": jnp.concatenate([fp[g]["bias"] for g in ("ir", "iz", "in")])},
          "recurrent": {"kernel": jnp.concatenate([fp[g]["kernel"] for g in ("hr", "hz", "hn")],
                                                  1),
                        "bias": fp["hn"]["bias"]}}
  assert jax.tree.map(jnp.shape, ours) == jax.tree.map(
      jnp.shape, recurrent.GRU.init(jax.random.PRNGKey(0), D, H))
  want_h, want_y = flax_cell.apply({"params": fp}, h0, x)
  carry, y = recurrent.GRU(ours, {"h": h0}, x)
  np.testing.assert_allclose(carry["h"], want_h, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-6)
  # A GRU layer under lax.scan equals a Python loop over the cell.
  xs = jax.random.normal(jax.random.PRNGKey(4), (B, 5, D))
  _, scanned = recurrent.run_layer(recurrent.GRU, ours, xs, {"h": h0})
  h, looped = h0, []
  for t in range(5):
    h, _ = flax_cell.apply({"params": fp}, h, xs[:, t])
    looped.append(h)
  np.testing.assert_allclose(scanned, jnp.stack(looped, 1), rtol=1e-5, atol=1e-5)


# --- shapes, attention, causality ---------------------------------------------------------

@pytest.mark.parametrize("cell,attention,layers", [("gru", "additive", 1),
                                                   ("lstm", "general", 2),
                                                   ("gru", "dot", 2)])
def test_shapes_attention_sums_to_one_and_ignores_padding(cell, attention, layers):
  config = tiny(cell=cell, attention=attention, num_layers=layers,
                decoder_size=10 if attention == "dot" else 8)
  network = seq2seq.build(config, Info())
  params = network.init(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  src, tgt = rng.integers(4, 11, (3, 7)), rng.integers(4, 9, (3, 5))
  src_length = np.array([7, 3, 1])
  src[1, 3:], src[2, 1:] = 0, 0
  batch = batch_of(src, tgt, src_length)
  enc = network.encode(params, jnp.asarray(batch["tokens"][..., 0]), batch["src_length"])
  assert enc["annotations"].shape == (3, 7, 10)  # 2 * hidden_size
  logits, att = network.apply(params, batch)
  assert logits.shape == (3, 7, 9) and att.shape == (3, 7, 7)
  assert np.all(np.isfinite(logits))
  np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
  for b, n in enumerate(src_length):
    assert np.all(att[b, :, n:] == 0.0)
  # Padding content does not matter: other ids in the padded source positions.
  noisy = {**batch, "tokens": batch["tokens"].copy()}
  noisy["tokens"][1, 3:, 0] = 5
  noisy["tokens"][2, 1:, 0] = 7
  np.testing.assert_allclose(network.apply(params, noisy)[0], logits, rtol=1e-5, atol=1e-5)
  # jit equals no jit; dropout makes training outputs differ from evaluation's.
  np.testing.assert_allclose(jax.jit(lambda p, b: network.apply(p, b)[0])(params, batch),
                             logits, rtol=1e-5, atol=1e-5)


def test_decoder_output_at_t_does_not_depend_on_later_targets():
  T = 6
  config = tiny(num_layers=2, dropout=0.0)
  network = seq2seq.build(config, Info(tgt=4 + T))
  params = network.init(jax.random.PRNGKey(0))
  tgt = np.arange(4, 4 + T)[None]  # a distinct id at every position
  batch = batch_of(np.array([[5, 6, 7]]), tgt, [3])
  # d(sum of logits at t) / d(embedding table), for every t at once: [T, V, E].
  jacobian = jax.jit(jax.jacrev(lambda table: network.apply(
      {**params, "tgt_embed": {"embedding": table}}, batch)[0][0, :T].sum(-1)))(
          params["tgt_embed"]["embedding"])
  for t in range(T):
    row_norm = np.abs(np.asarray(jacobian[t])).sum(-1)
    # Position t reads BOS and targets 0..t-1: ids 4..4+t-1; never targets t.. (ids 4+t..).
    assert row_norm[seq2seq.BOS] > 0
    assert np.all(row_norm[4:4 + t] > 0), (t, row_norm)
    assert np.all(row_norm[4 + t:] == 0), (t, row_norm)


# --- decoding -------------------------------------------------------------------------------

def test_greedy_equals_beam_search_with_beam_1():
  network = seq2seq.build(tiny(num_layers=2, cell="lstm"), Info())
  params = network.init(jax.random.PRNGKey(3))
  src = jnp.asarray(np.random.default_rng(1).integers(4, 11, (5, 6)), jnp.int32)
  length = jnp.array([6, 5, 3, 1, 2])
  greedy, g_att = seq2seq.greedy_decode(network, params, src, length, 8)
  beam, b_att, _ = seq2seq.beam_decode(network, params, src, length, 8, 1, 1.0)
  np.testing.assert_array_equal(greedy, beam)
  np.testing.assert_allclose(g_att, b_att, rtol=1e-5, atol=1e-6)
  # After EOS only PAD.
  for row in np.asarray(greedy):
    if seq2seq.EOS in row:
      assert np.all(row[list(row).index(seq2seq.EOS) + 1:] == seq2seq.PAD)


def _sequence_log_probs(network, params, src, ys):
  """log p(y | src) of each y, by teacher forcing in one batch, with decoding's PAD/BOS
  exclusion."""
  T = max(len(y) for y in ys)
  tgt = np.zeros((len(ys), T), np.int32)
  for i, y in enumerate(ys):
    tgt[i, :len(y)] = y
  batch = batch_of(np.repeat(src[None], len(ys), 0), tgt, [len(src)] * len(ys))
  logits = jax.jit(lambda p, b: network.apply(p, b)[0])(params, batch)[:, :T]
  logits = logits.at[..., seq2seq.PAD].set(-jnp.inf).at[..., seq2seq.BOS].set(-jnp.inf)
  logp = np.asarray(jnp.take_along_axis(jax.nn.log_softmax(logits, -1), tgt[..., None],
                                        -1)[..., 0])
  return [float(logp[i, :len(y)].sum()) for i, y in enumerate(ys)]


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_matches_exhaustive_search_on_a_tiny_model(length_penalty):
  V, steps = 6, 3  # decodable: <unk>, </s>, 4, 5
  network = seq2seq.build(tiny(), Info(tgt=V))
  params = network.init(jax.random.PRNGKey(7))
  params["output"]["kernel"] = params["output"]["kernel"] * 3.0  # peakier, fewer ties
  src = np.array([4, 7, 5], np.int32)
  candidates = set()
  for ys in itertools.product([1, 3, 4, 5], repeat=steps):
    ys = list(ys)
    candidates.add(tuple(ys[:ys.index(3) + 1] if 3 in ys else ys))
  candidates = sorted(candidates)
  log_probs = _sequence_log_probs(network, params, src, candidates)
  scored = {y: lp / len(y) ** length_penalty for y, lp in zip(candidates, log_probs)}
  best = max(scored, key=scored.get)
  tokens, _, score = seq2seq.beam_decode(network, params, jnp.asarray(src[None]),
                                         jnp.array([3]), steps, 4 ** steps, length_penalty)
  got = tuple(int(t) for t in np.asarray(tokens)[0] if t != seq2seq.PAD)
  assert got == best
  assert float(score[0]) == pytest.approx(scored[best], rel=1e-4)


# --- training -------------------------------------------------------------------------------

def toy_pairs(n, seed, task="reverse"):
  rng = random.Random(seed)
  src, tgt = [], []
  for _ in range(n):
    words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
    src.append(" ".join(words))
    tgt.append(" ".join(reversed(words) if task == "reverse" else words))
  return src, tgt


def toy_config(workdir, **kw):
  model = dict(embed_dim=16, hidden_size=32, decoder_size=32, attention_size=32,
               dropout=0.0)
  model.update({k: kw.pop(k) for k in list(kw) if k in seq2seq.Config.__dataclass_fields__})
  base = dict(model="seq2seq", dataset="toy", workdir=str(workdir), batch_size=32,
              num_epochs=1, optimizer="adam", learning_rate=0.01, grad_clip=1.0,
              bucket_by_length=False, progress=False, tensorboard=False, log_every=10,
              model_config=tiny(**model))
  base.update(kw)
  return Config(**base)


def toy_data(cfg, n=640, task="reverse"):
  raw = translation.ParallelSplits(toy_pairs(n, 0, task), toy_pairs(64, 1, task),
                                   toy_pairs(64, 2, task), name="toy")
  return translation.prepare(raw, cfg)


def test_one_step_changes_every_parameter(tmp_path):
  cfg = toy_config(tmp_path, num_layers=2, dropout=0.3, cell="lstm")
  trainer = Trainer(cfg, toy_data(cfg, n=64))
  state = trainer.initial_state()
  before = jax.device_get(state.params)
  state, metrics = trainer.train_step(state, next(trainer.batches(0)))
  assert_every_param_changed(before, state.params)
  assert math.isfinite(float(metrics["loss"]))


def test_reverse_task_is_learned_to_near_perfect_accuracy(tmp_path):
  # 16 epochs: 12 ended at 0.967-0.996 depending on XLA:CPU's dot kernels (flags).
  cfg = toy_config(tmp_path, num_epochs=16)
  data = toy_data(cfg)
  trainer = Trainer(cfg, data)
  state = trainer.initial_state()
  batches = trainer.batches(0)
  for _ in range(trainer.total_steps):
    state, _ = trainer.train_step(state, next(batches))
  metrics = trainer.evaluate(state.params, data.test)
  assert metrics["accuracy"] > 0.97, metrics
  assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]), rel=1e-5)
  # Decoding reverses unseen sentences.
  src_tok, tgt_tok = translation.tokenizers(data)
  texts = ["a b c", "h g f e d", "c"]
  src = np.zeros((3, 8), np.int32)
  for i, t in enumerate(texts):
    src[i, :len(t.split())] = src_tok.encode(t)
  out, _ = seq2seq.greedy_decode(trainer.network, state.params, src,
                                 np.array([3, 5, 1]), 8)
  assert [tgt_tok.decode(o) for o in np.asarray(out)] == ["c b a", "d e f g h", "c"]


def test_task_and_config_errors():
  task = tasks.get("seq2seq")
  assert (task.best_metric, task.best_mode) == ("valid/loss", "min")
  assert task.derived({"loss": 2.0})["perplexity"] == pytest.approx(math.exp(2.0))
  with pytest.raises(ConfigError, match="dot"):
    seq2seq.build(tiny(attention="dot"), Info())
  with pytest.raises(ConfigError, match="cv_folds"):
    seq2seq.check(Config(model="seq2seq", cv_folds=5, model_config=seq2seq.Config()))
  with pytest.raises(ConfigError, match="go together"):
    seq2seq.check(Config(model="seq2seq", model_config=seq2seq.Config(train_src_file="x")))
