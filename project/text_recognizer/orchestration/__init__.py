"""Many runs from one description: a W&B sweep YAML run offline (``local_sweep``: the YAML, the
engine, the state on disk, the scheduler, the report), one sweep trial's arguments as ``wandb
agent`` passes them (``trial_args``), and an experiments file turned into commands for GNU parallel
(``prepare``). A single run's lifecycle is not here (that is the runner's); each module is imported
by its own path, so this file names nothing."""
