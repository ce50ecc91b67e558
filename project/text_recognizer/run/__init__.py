"""One run's lifecycle: the command, the runner, its record, checkpoints, tracking and media, torchrun.

``cli`` parses and checks before torch loads; ``runner`` trains and tests inside a ``records``
folder that says at every moment how the run stands; ``checkpoint`` makes it resumable;
``tracking`` and ``media`` mirror it to W&B; ``distributed`` sets up torchrun ranks.
"""
