"""Training: one loop (``loop.train``), three stage step functions (``stage1``, ``stage2``, ``stage3``),
typed configs (``config.TrainConfig``), checkpoints, EMA, DDP helpers and logs.

Command line: ``iqpfr train CONFIG [--set key=value] [--resume auto|PATH]``; see README, "Training".
"""
