"""Kim's all-splits vocabulary, emulated at evaluation: does it explain the TREC gap?

Kim's preprocessing builds the vocabulary over train, dev and test, so a word that
training never saw still has a vector of its own: random U[-0.25, 0.25], never trained.
This project maps such words to <unk> (the vocabulary comes from training data only).
For each finished textcnn workdir given, this evaluates its best/ checkpoint on the
validation and test splits both ways and prints one JSON line:

  as_trained  unseen words -> <unk>, as the run evaluates them;
  kim_vocab   every word absent from the training part gets its own random vector
              (drawn from the word and 1000 + the run's seed), words seen in training
              but under --min_freq still -> <unk>.

  python docs/analysis/trec_kim_vocabulary.py WORKDIR [WORKDIR ...]

An analysis for the README, not a library path: epochs stay those selected as trained.
"""

import json
import sys
import zlib

import jax
import numpy as np

from nets import trainer as trainer_lib
from nets.data import text


def evaluate(workdir) -> dict:
  cfg, trainer, state, which = trainer_lib.restore_for_eval(workdir, "best")
  splits = text.make_splits(text.load_raw(cfg), seed=cfg.data_seed,
                            valid_fraction=cfg.valid_fraction,
                            test_fraction=cfg.test_fraction)
  seen = {w for tokens, _ in splits.train for w in tokens}
  unseen = sorted({w for split in (splits.valid, splits.test) for tokens, _ in split
                   for w in tokens} - seen)
  params = jax.device_get(state.params)
  table = np.asarray(params["embed"]["embedding"])
  rows = np.zeros((len(unseen), table.shape[1]), np.float32)
  for i, w in enumerate(unseen):
    rows[i] = np.random.default_rng([1000 + cfg.seed, zlib.crc32(w.encode())]).uniform(
        -0.25, 0.25, table.shape[1])
  kim_params = {**params, "embed": {"embedding": np.concatenate([table, rows])}}
  vocab, max_len = trainer.data.vocab, trainer.data.max_len
  kim_vocab = text.Vocab([*vocab.itos, *unseen])  # unseen words after the trained rows
  result = {"workdir": workdir, "seed": cfg.seed, "checkpoint": which,
            "unseen_words": len(unseen)}
  for name in ("valid", "test"):
    examples = getattr(splits, name)
    as_trained = text.encode(examples, vocab, max_len)
    kim = text.encode(examples, kim_vocab, max_len)
    result[f"{name}/as_trained"] = trainer.evaluate(params, as_trained)["accuracy"]
    result[f"{name}/kim_vocab"] = trainer.evaluate(kim_params, kim)["accuracy"]
  return result


if __name__ == "__main__":
  for workdir in sys.argv[1:]:
    print(json.dumps(evaluate(workdir)), flush=True)
