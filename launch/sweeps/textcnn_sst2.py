r"""Kim's CNN-rand on SST-2: learning rate x dropout, 2 x 2 = 4 runs.

Command (from the repository root; data from --data_dir / $NETS_DATA_DIR or downloaded):

  python -m launch.sweep launch/sweeps/textcnn_sst2.py --runner=print   # the 4 commands
  python -m launch.sweep launch/sweeps/textcnn_sst2.py --runner=local   # one at a time
  python -m launch.sweep launch/sweeps/textcnn_sst2.py --runner=local --gpus=0,1,2,3
  python -m launch.sweep launch/sweeps/textcnn_sst2.py --runner=slurm \
      --sbatch_option=--gres=gpu:1 --sbatch_option=--time=02:00:00
  python -m launch.summarize workdirs/textcnn_sst2

Writes workdirs/textcnn_sst2/learning_rate=0.5,dropout=0.3/ ... (4 workdirs, each with
config.json, metrics.jsonl, checkpoints/, train.log and, when done, summary.json).
Rerunning the sweep command skips finished runs and resumes the others.

Expected: each run trains 25 epochs of Adadelta on the 77k training phrases; Kim (2014)
reports 82.7% test accuracy for CNN-rand with lr 1.0 and dropout 0.5, so the summary's
best test/accuracy should be near 0.82-0.83 (not yet measured with this code base: record
the numbers here once a GPU run has finished).
"""

SWEEP = {
    "base": {"model": "textcnn", "dataset": "sst2", "progress": False},
    "product": {"learning_rate": [0.5, 1.0], "dropout": [0.3, 0.5]},
}
