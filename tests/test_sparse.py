"""Row-sparse embedding updates equal dense updates (nets.sparse)."""

import jax
import numpy as np
import pytest

from nets import sparse
from nets.data import datasets, text
from nets.trainer import Trainer
from tests.conftest import tiny_config


def _train(cfg, steps):
  raw = datasets.load_raw(cfg)
  data = datasets.prepare(raw, cfg)
  trainer = Trainer(cfg, data)
  state = trainer.initial_state()
  batches = trainer.batches(0)
  for _ in range(steps):
    state, _ = trainer.train_step(state, next(batches))
  return trainer, jax.device_get(state.params)


@pytest.mark.parametrize("optimizer,lr", [("adadelta", 1.0), ("adagrad", 0.1),
                                          ("rmsprop", 0.01), ("sgd", 0.1)])
def test_sparse_updates_equal_dense_updates(tmp_path, keyword_files, optimizer, lr):
  train, test = keyword_files
  kw = dict(optimizer=optimizer, learning_rate=lr, grad_clip=1.0, l2=1e-3)
  sparse_trainer, p_sparse = _train(tiny_config(tmp_path / "s", train, test,
                                                sparse_updates=True, **kw), 12)
  dense_trainer, p_dense = _train(tiny_config(tmp_path / "d", train, test,
                                              sparse_updates=False, **kw), 12)
  assert sparse_trainer.sparse_tables and not dense_trainer.sparse_tables
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
               p_sparse, p_dense)
  # Rows of words never seen in a batch must still be their initial values: proven by
  # equality with the dense path, whose untouched rows never move.


def test_momentum_and_adam_stay_dense(tmp_path, keyword_files):
  train, test = keyword_files
  for opt in ("momentum", "adam"):
    cfg = tiny_config(tmp_path / opt, train, test, optimizer=opt, sparse_updates=True)
    trainer = Trainer(cfg, datasets.prepare(datasets.load_raw(cfg), cfg))
    assert trainer.sparse_tables == ()
    assert not sparse.supported(opt)


def test_unique_ids_renumber_tokens_with_pad_first():
  tokens = np.array([[5, 3, 0], [3, 9, 9]], np.int32)
  ids, renumbered = sparse.unique_ids(tokens, vocab_size=10)
  ids, renumbered = np.asarray(ids), np.asarray(renumbered)
  assert ids[0] == 0 and list(ids[:4]) == [0, 3, 5, 9] and (ids[4:] == 10).all()
  np.testing.assert_array_equal(ids[renumbered], tokens)
  assert renumbered[0, 2] == 0  # PAD stays PAD, so models can still mask on it
