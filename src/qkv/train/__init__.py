"""Training: the loop (`loop.fit`), optimiser and schedules, checkpoints of the training state, and
the several-process paths (DDP, FSDP). The one error the CLI needs lives here, so that a command
other than `train` does not import the loop (and, through FSDP, half a second of torch.distributed)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss with on_nan = "stop", or a checkpoint that cannot be
    written); the message says where."""
