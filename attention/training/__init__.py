"""The training machinery: the one loop every task and model trains with.

  train_lib.py    train_and_evaluate (train.py) and evaluate_checkpoint
                  (eval.py): the mesh, the jitted steps, the summing loop
  config_check.py the whole config checked in one pass, before any data;
                  a resumed run's config against the one it started with
  cli.py          what train.py and eval.py say: flags (mistakes in one
                  line), quiet library logs, what to run next
  checkpoints.py  Orbax checkpoints of the train state and the data iterator
  distributed.py  multi-process start-up, the workdir lock, SIGTERM
  writers.py      metrics.jsonl and TensorBoard events
  sweep.py        a config's sweep: one run per point, the results table

This room owns the devices: the mesh, sharding, moving batches to devices
and summing metrics over them. The tasks (attention.tasks) hand it host
arrays and pure functions.
"""
