"""One trainer for every model family: a jitted pure step over one TrainState pytree.

The state holds everything that changes during training (params, optimizer state, step,
rng), so a checkpoint is the state and resuming is restoring it. The data order depends
only on (seed, step) and the step's rng is the state's rng folded with the step, so an
interrupted and resumed run computes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import shutil
import time
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from nets import models, optim, parallel, regularizers, sparse, tasks
from nets.checkpoint import Checkpoints, is_better
from nets.config import Config, from_dict, resolve_workdir
from nets.data import datasets, pipeline
from nets.errors import ConfigError, UserError
from nets.metrics_writer import MetricWriter

# Changing these between runs in one workdir is fine; anything else is another experiment.
RESUMABLE_CHANGES = {"num_epochs", "max_steps", "eval_every", "checkpoint_every",
                     "keep_checkpoints", "log_every", "progress", "tensorboard", "workdir",
                     "data_dir", "data_mirror", "steps_per_dispatch",
                     "refit"}  # a stage after the run: turning it on later adds it


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  model_state: Any = flax.struct.field(default_factory=dict)  # e.g. an RNN's carried state


# --- the step ---------------------------------------------------------------------------

def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation, cfg: Config,
                    sparse_tables: tuple = (), row_tx=None, vocab_size: int = 0):
  """A pure (state, batch) -> (state, metrics) step.

  sparse_tables: embedding modules (looked up by batch["tokens"]) whose rows are updated
  row-sparsely (nets.sparse); empty for the dense path.
  update_scale: None, or a replica's learning rate over the optimizer's. optax applies
  the learning rate as the last factor of every optimizer here, so scaling the updates is
  exactly training with that learning rate.
  """
  decay = sparse.ACCUMULATOR_DECAY.get(cfg.optimizer, 1.0)

  def train_step(state: TrainState, batch: dict, update_scale=None):
    rng = jax.random.fold_in(state.rng, state.step)
    params = state.params
    tables = [t for t in sparse_tables if t in params]
    if tables:
      ids, tokens = sparse.unique_ids(batch["tokens"], vocab_size)
      batch = {**batch, "tokens": tokens}
      params = {**params, **{t: {"embedding": sparse.gather(params[t]["embedding"], ids)}
                             for t in tables}}

    def objective(params):
      loss, (sums, model_state) = loss_fn(params, state.model_state, batch, rng, True)
      penalty = regularizers.penalty(params, l1_weight=cfg.l1, l2_weight=cfg.l2,
                                     frobenius_weight=cfg.frobenius)
      return loss + penalty, (loss, sums, penalty, model_state)

    grads, (loss, sums, penalty, model_state) = jax.grad(objective, has_aux=True)(params)
    grad_norm = optax.global_norm(grads)
    grads = optim.clip_by_global_norm(grads, cfg.grad_clip)
    dense = lambda tree: {k: v for k, v in tree.items() if k not in tables}
    updates, dense_opt = tx.update(dense(grads), state.opt_state["dense"],
                                   dense(state.params))
    if update_scale is not None:
      updates = jax.tree.map(lambda u: u * update_scale, updates)
    new_params = optax.apply_updates(dense(state.params), updates)
    rows_opt = dict(state.opt_state["rows"])
    for t in tables:
      if t in rows_opt:
        table, rows_opt[t] = sparse.update(row_tx, decay, state.params[t]["embedding"],
                                           rows_opt[t], ids, grads[t]["embedding"],
                                           state.step, update_scale)
        new_params[t] = {"embedding": table}
      else:  # a frozen table
        new_params[t] = state.params[t]
    new_params = regularizers.max_norm(new_params, cfg.max_norm)
    count = jnp.maximum(sums["count"], 1.0)
    metrics = {k: v / count for k, v in sums.items() if k not in ("count", "loss")}
    metrics.update(loss=loss, penalty=penalty, grad_norm=grad_norm)
    return state.replace(step=state.step + 1, params=new_params, model_state=model_state,
                         opt_state={"dense": dense_opt, "rows": rows_opt}), metrics

  return train_step


def make_eval_step(loss_fn: Callable):
  """(params, model_state, batch) -> (sums, model_state)."""
  return lambda params, model_state, batch: loss_fn(params, model_state, batch, None,
                                                    False)[1]


def init_state(network: models.Network, tx, sparse_tables: tuple = (), row_tx=None,
               model_state: Callable = lambda: {}):
  def init(rng):
    params_rng, rng = jax.random.split(rng)
    params = network.init(params_rng)
    dense = {k: v for k, v in params.items() if k not in sparse_tables}
    rows = {t: sparse.init(row_tx, params[t]["embedding"]) for t in sparse_tables
            if t in params and not optim.is_frozen([t])}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state={"dense": tx.init(dense), "rows": rows}, rng=rng,
                      model_state=model_state())
  return init


def epoch_layout(cfg: Config, train: dict | None, shuffle: bool = True) -> tuple[tuple, int]:
  """(length buckets, steps per epoch) of training on `train`. Evaluation-only trainers
  (no training split) still need a step count for schedules: 1."""
  if train is None:
    return (), 1
  buckets = ()
  if cfg.bucket_by_length and "length" in train:
    buckets = pipeline.bucket_lengths(train["tokens"].shape[1])
  order = pipeline.effective_order(cfg.batch_order, shuffle)
  return buckets, pipeline.steps_per_epoch(train, cfg.batch_size, buckets, order)


class Trainer:
  """A family, its data and the compiled steps for one run (one CV fold)."""

  def __init__(self, cfg: Config, data: datasets.Data, mesh=None):
    self.cfg, self.data = cfg, data
    self.family = models.get(cfg.model)
    self.mesh = mesh or parallel.make_mesh()
    parallel.check_batch_size(cfg.batch_size, self.mesh)
    self.buckets, self.steps_per_epoch = epoch_layout(cfg, data.train, data.shuffle)
    if self.steps_per_epoch == 0:
      raise ConfigError(f"--batch_size={cfg.batch_size} is larger than the "
                        f"{pipeline.num_examples(data.train)} training examples")
    self.total_steps = cfg.num_epochs * self.steps_per_epoch
    if cfg.max_steps:
      self.total_steps = min(self.total_steps, cfg.max_steps)
    self.network = self.family.build(cfg.model_config, data)
    self.task = tasks.get(self.family.TASK)
    self.loss_fn = self.task.make_loss(self.network, cfg)
    self.tx = optim.make(cfg, self.total_steps)
    self.sparse_tables = ()
    if (cfg.sparse_updates and sparse.supported(cfg.optimizer)
        and getattr(self.family, "TOKEN_TABLES", ())):
      self.sparse_tables = tuple(self.family.TOKEN_TABLES)
    row_tx = optim.make_rows(cfg, self.total_steps)

    self.replicated = parallel.replicated(self.mesh)
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    init = init_state(self.network, self.tx, self.sparse_tables, row_tx,
                      getattr(self.network, "initial_model_state", lambda: {}))
    step = make_train_step(self.loss_fn, self.tx, cfg, self.sparse_tables, row_tx,
                           getattr(data, "vocab_size", 0) if data.vocab is not None else 0)
    evaluate = make_eval_step(self.loss_fn)
    # Replicas (--vmap_seeds, --vmap_learning_rates): one program over a leading axis R of
    # the state and of training batches; evaluation batches are shared.
    self.replicas = cfg.replicas()
    if self.replicas:
      scales = jnp.asarray([lr / cfg.learning_rate for _, lr in self.replicas], jnp.float32)
      self._keys = jnp.stack([jax.random.PRNGKey(seed) for seed, _ in self.replicas])
      self._init = jax.vmap(init)
      step_fn = lambda state, batch: jax.vmap(step)(state, batch, scales)
      evaluate = jax.vmap(evaluate, in_axes=(0, 0, None))
    else:
      self._keys = jax.random.PRNGKey(cfg.seed)
      self._init = init
      step_fn = step
    leading = 1 if self.replicas else 0
    self.train_batch_sharding = parallel.batch_sharding(self.mesh, leading_axes=leading)
    self.chunk_sharding = parallel.batch_sharding(self.mesh, leading_axes=leading + 1)
    abstract = jax.eval_shape(self._init, self._keys)
    self.state_sharding = jax.tree.map(lambda _: self.replicated, abstract)
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract, self.state_sharding)
    self.train_step = jax.jit(
        step_fn, in_shardings=(self.state_sharding, self.train_batch_sharding),
        out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    # --steps_per_dispatch: that many steps in one call, a scan over a [K, ...] chunk of
    # batches; metrics come back stacked [K, ...].
    self.train_steps = jax.jit(
        lambda state, chunk: jax.lax.scan(step_fn, state, chunk),
        in_shardings=(self.state_sharding, self.chunk_sharding),
        out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    self.eval_step = jax.jit(
        evaluate,
        in_shardings=(self.state_sharding.params, self.state_sharding.model_state,
                      self.batch_sharding),
        out_shardings=(self.replicated, self.state_sharding.model_state))

  def initial_state(self) -> TrainState:
    if getattr(self.data, "pretrained", None) is not None:
      # Not jitted: the pretrained table would become a compile-time constant.
      return jax.device_put(self._init(self._keys), self.state_sharding)
    return jax.jit(self._init, out_shardings=self.state_sharding)(self._keys)

  def put(self, batch: dict) -> dict:
    return parallel.put_batch(batch, self.batch_sharding)

  def batches(self, start_step: int):
    """Training batches on the devices from `start_step`, one per step."""
    return (batch for _, batch in self.dispatches(start_step, itertools.repeat(1)))

  def dispatches(self, start_step: int, sizes):
    """(n, what `train_step` (n = 1) or `train_steps` (n > 1) takes) for each n of
    `sizes`: the next n training batches from `start_step`, stacked when n > 1."""
    host = self._host_batches(start_step)

    def chunks():
      for n in sizes:
        batches = [next(host) for _ in range(n)]
        yield n, batches[0] if n == 1 else pipeline.stack_batches(batches)

    return pipeline.prefetch(chunks(), lambda chunk: (chunk[0], parallel.put_batch(
        chunk[1], self.train_batch_sharding if chunk[0] == 1 else self.chunk_sharding)))

  def _host_batches(self, start_step: int):
    """Training batches from `start_step`; with replicas, one per replica's seed, stacked."""
    rows = parallel.local_slice(self.cfg.batch_size)
    seeds = [seed for seed, _ in self.replicas] or [self.cfg.seed]
    its = [pipeline.train_batches(self.data.train, self.cfg.batch_size, seed, start_step,
                                  rows, self.buckets, shuffle=self.data.shuffle,
                                  order=self.cfg.batch_order)
           for seed in seeds]
    if not self.replicas:
      return its[0]
    return (pipeline.stack_batches([next(i) for i in its]) for _ in iter(int, 1))

  def evaluate(self, params, arrays: dict, batch_size: int | None = None) -> dict:
    """Mean of every metric over all examples of `arrays`."""
    batch_size = batch_size or self.cfg.batch_size
    rows = parallel.local_slice(batch_size)
    totals = None
    model_state = jax.device_put(self.fresh_model_state(), self.state_sharding.model_state)
    for batch in pipeline.eval_batches(arrays, batch_size, rows):
      sums, model_state = self.eval_step(params, model_state, self.put(batch))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    totals = jax.device_get(totals)
    count = np.maximum(totals.pop("count"), 1.0)
    # Floats, or [R] arrays (one value per replica).
    means = {k: v / count if self.replicas else float(v) / float(count)
             for k, v in totals.items()}
    return {**means, **self.task.derived(means)}

  def fresh_model_state(self):
    """A fresh model state (zeros), e.g. the RNN carry evaluation starts from."""
    fresh = getattr(self.network, "initial_model_state", lambda: {})()
    if self.replicas:
      fresh = jax.tree.map(lambda x: jnp.stack([x] * len(self.replicas)), fresh)
    return fresh

  def evaluate_splits(self, params) -> dict:
    out = {}
    for split in ("valid", "test"):
      arrays = getattr(self.data, split)
      if arrays is not None:
        out.update({f"{split}/{k}": v for k, v in self.evaluate(params, arrays).items()})
    return out


# --- the loop -----------------------------------------------------------------------------

def train_and_evaluate(cfg: Config, workdir: str | None = None) -> dict:
  """Trains (every CV fold if asked), writes config, metrics, checkpoints, summary.json."""
  workdir = workdir or resolve_workdir(cfg)
  os.makedirs(workdir, exist_ok=True)
  _check_same_experiment(cfg, workdir)
  _write_json(os.path.join(workdir, "config.json"), cfg.to_dict())
  raw = datasets.load_raw(cfg)
  if not cfg.cv_folds:
    summary = train_split(cfg, datasets.prepare(raw, cfg), workdir)
  else:
    folds = []
    for fold in range(cfg.cv_folds):
      fold_dir = os.path.join(workdir, f"fold{fold:02d}")
      os.makedirs(fold_dir, exist_ok=True)
      _write_json(os.path.join(fold_dir, "config.json"), cfg.to_dict())
      folds.append(train_split(cfg, datasets.prepare(raw, cfg, fold), fold_dir,
                               desc=f"fold {fold + 1}/{cfg.cv_folds}"))
    summary = cross_validation_summary(folds)
    _write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def train_split(cfg: Config, data: datasets.Data, workdir: str, desc: str = "train") -> dict:
  """One run; with --refit, then a fresh one on train + valid (see `refit`)."""
  if not cfg.refit:
    return run(cfg, data, workdir, desc)
  _check_refit(data)
  summary = run(cfg, data, workdir, desc, summary_file="run_summary.json")
  summary = {**summary, **refit(cfg, data, workdir, summary, desc)}
  _write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


def _check_refit(data: datasets.Data) -> None:
  if not data.shuffle:
    raise ConfigError("--refit trains again on train + validation examples; this data is "
                      "a stream without separate examples to merge: pass --refit=false")
  if data.valid is None or data.train is None:
    raise ConfigError("--refit needs training and validation splits (validation selects "
                      "the epochs): pass --refit=false")
  differ = sorted(k for k in set(data.train) | set(data.valid)
                  if k not in data.train or k not in data.valid
                  or data.train[k].shape[1:] != data.valid[k].shape[1:])
  if differ:
    raise ConfigError(f"--refit cannot merge the train and validation arrays (they differ in "
                      f"{', '.join(differ)}): pass --refit=false")


def refit(cfg: Config, data: datasets.Data, workdir: str, summary: dict,
          desc: str = "train") -> dict:
  """Trains a fresh model on train + valid for the epochs that validation selected.

  The epochs are those of the run's best/ checkpoint (with replicas: the best mean over
  replicas), so the refit sees ~1/(1 - valid_fraction) times the data with nothing
  chosen on test. It runs in WORKDIR/refit (its own checkpoints, resumable) and reports
  its final metrics, returned here as refit/test/...; the vocabulary and padded length
  stay those of the training part. Schedules span the refit's steps.
  """
  spe = epoch_layout(cfg, data.train)[1]
  best = _read_json(os.path.join(workdir, "best", "best.json"))
  selected_step = best["step"] if best else summary["steps"]
  epochs = selected_step / spe
  merged = {k: np.concatenate([data.train[k], data.valid[k]]) for k in data.train}
  refit_data = dataclasses.replace(data, train=merged, valid=None)
  steps = max(1, round(epochs * epoch_layout(cfg, merged)[1]))
  refit_cfg = cfg.replace(refit=False, num_epochs=max(1, math.ceil(epochs)), max_steps=steps)
  refit_dir = os.path.join(workdir, "refit")
  old = _read_json(os.path.join(refit_dir, "config.json"))
  # The run's own config is checked already; a longer run can select other epochs, and
  # then the refit starts over.
  if old is not None and (old["max_steps"], old["num_epochs"]) != (steps, refit_cfg.num_epochs):
    print(f"{refit_dir}: validation now selects {epochs:g} epochs; refitting from scratch")
    if jax.process_index() == 0:
      shutil.rmtree(refit_dir)
    if jax.process_count() > 1:  # no host may open the old directory's checkpoints
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("nets refit restart")
  os.makedirs(refit_dir, exist_ok=True)
  _write_json(os.path.join(refit_dir, "config.json"), refit_cfg.to_dict())
  result = run(refit_cfg, refit_data, refit_dir, desc=f"{desc} (refit)")
  out = {f"refit/{k}": v for k, v in result.items()
         if k.startswith("test/") and isinstance(v, (int, float))}
  out["refit"] = {"epochs": epochs, "selected_step": selected_step, "steps": steps,
                  "train_examples": pipeline.num_examples(merged), "summary": result}
  return out


def run(cfg: Config, data: datasets.Data, workdir: str, desc: str = "train",
        summary_file: str = "summary.json") -> dict:
  """Trains one model in `workdir` (resuming), writes its summary to `summary_file`.

  summary.json marks a finished workdir (sweeps skip those), so a run that a later stage
  follows (--refit) writes its own summary under another name.
  """
  trainer = Trainer(cfg, data)
  # summary.json too: a run that finished before --refit was added to its command.
  for name in dict.fromkeys((summary_file, "summary.json")):
    done = _read_json(os.path.join(workdir, name))
    if done and done.get("steps") == trainer.total_steps:
      print(f"{workdir}: already trained for {done['steps']} steps; {name} kept")
      return done
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, "data.json"), data.describe())
    if data.vocab is not None:
      data.vocab.save(os.path.join(workdir, "vocab.txt"))

  task = trainer.task
  checkpoints = Checkpoints(workdir, keep=cfg.keep_checkpoints, best_metric=task.best_metric,
                            best_mode=task.best_mode, best_on_tie=cfg.best_on_tie)
  replica_best = ReplicaBest(os.path.join(workdir, "replicas.json"), trainer.replicas,
                             task.best_metric, task.best_mode, cfg.best_on_tie)
  writer = MetricWriter(workdir, tensorboard=cfg.tensorboard)
  start = checkpoints.latest_step()
  if start is None:
    state, start = trainer.initial_state(), 0
    replica_best.reset()
  else:
    state = checkpoints.restore(trainer.abstract_state)
    print(f"{workdir}: resuming from step {start}")
  writer.truncate_after(start)

  spe, total = trainer.steps_per_epoch, trainer.total_steps
  eval_every = cfg.eval_every or spe
  checkpoint_every = cfg.checkpoint_every or eval_every
  pending, last_saved = [], start
  t_log, n_log, paused = time.perf_counter(), 0, 0.0  # paused: eval/checkpoint time
  t0 = time.perf_counter()
  bar = tqdm(total=total, initial=start, desc=desc, unit="step", disable=not cfg.progress,
             dynamic_ncols=True, mininterval=0.5)
  step = start
  try:
    sizes = dispatch_sizes(start, total, cfg.steps_per_dispatch,
                           (cfg.log_every, eval_every, checkpoint_every))
    for n, batch in trainer.dispatches(start, sizes):
      step_fn = trainer.train_step if n == 1 else trainer.train_steps
      state, metrics = step_fn(state, batch)
      pending.append((n, metrics))
      step += n
      n_log += n
      bar.update(n)
      if step % cfg.log_every == 0 or step == total:
        # Fetching waits only for the steps already dispatched; the device keeps busy.
        logged = _mean(jax.device_get(pending))
        logged.update(task.derived(logged))
        pending = []
        _check_finite(logged["loss"], step, bar)
        now = time.perf_counter()
        examples = n_log * cfg.batch_size * max(len(trainer.replicas), 1)
        logged["examples_per_s"] = examples / max(now - t_log - paused, 1e-9)
        t_log, n_log, paused = now, 0, 0.0
        flat = scalars({f"train/{k}": v for k, v in logged.items()})
        bar.set_postfix(loss=f"{flat['train/loss']:.4f}",
                        ex_s=f"{flat['train/examples_per_s']:.0f}")
        writer.write(step, step / spe, flat)
      if step % eval_every == 0 or step == total:
        jax.block_until_ready(state.params)  # so the pause below holds no training time
        t_pause = time.perf_counter()
        evals = trainer.evaluate_splits(state.params)
        replica_best.update(step, evals)
        flat = scalars(evals)
        writer.write(step, step / spe, flat)
        checkpoints.save_if_best(step, state, flat)
        bar.write(f"step {step} epoch {step / spe:.2f}: " + "  ".join(
            f"{k} {v:.4f}" for k, v in flat.items() if not isinstance(v, list)))
        paused += time.perf_counter() - t_pause
      if step % checkpoint_every == 0 or step == total:
        jax.block_until_ready(state.params)
        t_pause = time.perf_counter()
        checkpoints.save(step, state)
        last_saved = step
        paused += time.perf_counter() - t_pause
  except KeyboardInterrupt:
    if step != last_saved:
      checkpoints.save(step, state, force=True)
    checkpoints.close()
    raise UserError(f"interrupted at step {step}: checkpoint saved in {workdir}; rerun the "
                    "same command to resume")
  finally:
    bar.close()
    writer.close()
  checkpoints.close()

  final = trainer.evaluate_splits(state.params)
  info = {"steps": total, "epochs": total / spe, "selected_on": task.best_metric,
          "wall_time_s": time.perf_counter() - t0, "resumed_from": start}
  if trainer.replicas:
    summary = {**info, **replica_best.summary(
        final, None if data.valid is not None else total)}
  else:
    best = _read_json(os.path.join(workdir, "best", "best.json")) or {}
    selected = best.get("metrics", final)
    summary = {**info, "best_step": best.get("step", total), **selected, "final": final}
  if jax.process_index() == 0:
    _write_json(os.path.join(workdir, summary_file), summary)
  return summary


class ReplicaBest:
  """Each replica's best validation step and its metrics (replicas.json in the workdir).

  The `best/` checkpoint follows the mean over replicas; this keeps what each replica
  would have selected on its own, so the summary equals that of separate runs.
  """

  def __init__(self, path: str, replicas: list, metric: str, mode: str,
               on_tie: str = "earlier"):
    self.path, self.replicas, self.metric, self.mode = path, replicas, metric, mode
    self.on_tie = on_tie
    self.reset()
    if replicas:  # nothing saved before the first evaluation (or without validation)
      self.best = (_read_json(path) or {}).get("best") or self.best

  def reset(self) -> None:
    self.best = [None] * len(self.replicas) if self.replicas else None

  def update(self, step: int, evals: dict) -> None:
    if not self.replicas or self.metric not in evals:
      return
    for r, value in enumerate(np.asarray(evals[self.metric], np.float64)):
      old = self.best[r]
      better = old is None or is_better(value, old[self.metric], self.mode, self.on_tie)
      if math.isfinite(value) and better:
        self.best[r] = {"best_step": step, **{k: float(np.asarray(v)[r])
                                             for k, v in evals.items()}}
    _write_json(self.path, {"metric": self.metric, "best": self.best})

  def summary(self, final: dict, unvalidated_step: int | None = None) -> dict:
    """Each replica's selected and final metrics, and their mean and std.

    A run without a validation split (a refit) passes its last step as
    `unvalidated_step`: each replica then reports its final metrics. Otherwise a replica
    that never had a finite validation metric (diverged) reports none, and the means
    leave it out.
    """
    per_replica = []
    for r, (seed, lr) in enumerate(self.replicas):
      final_r = {k: float(np.asarray(v)[r]) for k, v in final.items()}
      chosen = self.best[r] or {}
      if unvalidated_step is not None:
        chosen = {"best_step": unvalidated_step, **final_r}
      per_replica.append({"seed": seed, "learning_rate": lr, **chosen, "final": final_r})
    out = aggregate(per_replica)
    out["replicas"] = out.pop("runs")
    return out


def _check_finite(loss, step: int, bar) -> None:
  """Stops a diverged run; with replicas, only when every replica diverged."""
  values = np.atleast_1d(np.asarray(loss, np.float64))
  if not np.isfinite(values).any():
    raise UserError(f"training diverged: train/loss is {values[0]} at step {step}; lower "
                    "--learning_rate or set --grad_clip")
  if not np.isfinite(values).all():
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    bar.write(f"step {step}: replicas {bad} diverged (loss not finite); the others go on")


def scalars(metrics: dict) -> dict:
  """Per-replica [R] arrays become their mean (over finite replicas) plus a list."""
  out = {}
  for k, v in metrics.items():
    if np.ndim(v) == 0:
      out[k] = float(v)
    else:
      v = np.asarray(v, np.float64)
      finite = v[np.isfinite(v)]
      out[k] = float(finite.mean()) if finite.size else float("nan")
      out[k + "/replicas"] = [float(x) for x in v]
  return out


def aggregate(runs: list[dict]) -> dict:
  """Mean and standard deviation of every metric over runs (CV folds, replicas)."""
  keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and "/" in k]
  out = {"count": len(runs)}
  for k in keys:
    values = np.array([r.get(k, np.nan) for r in runs], np.float64)
    out[k] = float(np.nanmean(values))
    out[k + "_std"] = float(np.nanstd(values))
  out["runs"] = runs
  return out


def cross_validation_summary(folds: list[dict]) -> dict:
  out = aggregate(folds)
  out["folds"], out["per_fold"] = out.pop("count"), out.pop("runs")
  return out


def dispatch_sizes(start: int, total: int, k: int, intervals: tuple):
  """Steps per dispatch from `start` to `total`: k, except that no dispatch runs past a
  multiple of an interval (a log, evaluation or checkpoint step); the steps before one
  that k would overrun go one at a time (two compiled programs, not one per length)."""
  step = start
  while step < total:
    stop = min([total] + [(step // e + 1) * e for e in intervals])
    n = k if stop - step >= k else 1
    yield n
    step += n


def _mean(pending: list[tuple]) -> dict:
  """Mean over logged steps of (n, metrics) dispatches, a step's metrics stacked [n, ...]
  when n > 1: floats, or [R] arrays with replicas."""
  rows = [{k: np.asarray(v)[None] if n == 1 else np.asarray(v) for k, v in m.items()}
          for n, m in pending]
  means = {k: np.mean(np.concatenate([r[k] for r in rows]), axis=0) for k in rows[0]}
  return {k: float(v) if np.ndim(v) == 0 else v for k, v in means.items()}


def _check_same_experiment(cfg: Config, workdir: str) -> None:
  old = _read_json(os.path.join(workdir, "config.json"))
  if old is None:
    return
  # An option added since that run was written is missing from its config.json; the run
  # behaved as the option's default, which from_dict fills in.
  old = json.loads(json.dumps(from_dict(old).to_dict()))
  new = json.loads(json.dumps(cfg.to_dict()))
  changed = sorted(k for k in set(old) | set(new)
                   if k not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
  if changed:
    raise ConfigError(f"workdir {workdir} holds a run with a different config (differs in: "
                      f"{', '.join(changed)}): use another --workdir, or the same flags to "
                      "resume")


def restore_for_eval(workdir: str, which: str = "best"):
  """(cfg, trainer, state, the checkpoint restored) from a finished or running workdir,
  for evaluation. "best" falls back to "latest" where there is none (a run without
  validation, such as a --refit stage)."""
  from nets.data import text
  cfg_dict = _read_json(os.path.join(workdir, "config.json"))
  info = _read_json(os.path.join(workdir, "data.json"))
  if cfg_dict is None or info is None:
    raise UserError(f"{workdir} is not a training workdir (no config.json/data.json): pass "
                    "the --workdir of a run of experiments.train")
  cfg = from_dict(cfg_dict)
  vocab_path = os.path.join(workdir, "vocab.txt")
  vocab = text.Vocab.load(vocab_path) if os.path.exists(vocab_path) else None
  data = datasets.Data.from_description(info, vocab)
  trainer = Trainer(cfg, data)
  checkpoints = Checkpoints(workdir, best_metric=trainer.task.best_metric,
                            best_mode=trainer.task.best_mode)
  state = checkpoints.restore(trainer.abstract_state, which=which)
  if state is None and which == "best":
    which = "latest"
    state = checkpoints.restore(trainer.abstract_state, which=which)
  checkpoints.close()
  if state is None:
    raise UserError(f"no checkpoint in {workdir}: train first, or pass another --workdir")
  return cfg, trainer, state, which


def _read_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _write_json(path: str, obj) -> None:
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)
