"""Training: one loop (``loop.train``), the stage table (``stages``) of the stage classes (``stage1``,
``stage2``, ``stage2_image``, ``stage3``), the pieces they share (``base.Stage``, ``networks``,
``losses``, ``discriminator``, ``targets``, ``loader``), typed configs (``config.TrainConfig``),
checkpoints, EMA, DDP helpers and logs. Stages import only the shared pieces, never each other.

Command line: ``iqpfr train CONFIG [--set key=value] [--resume auto|PATH]``; see README, "Training".
"""
