"""Training: typed config (config.py, schema.py) and the loop (loop.py)."""


class TrainingError(RuntimeError):
    """A run that cannot go on; the message says why and what to do."""
