"""Leases on this machine's GPUs and CPU cores, so that runs started side by side never share a GPU
slot and split the cores instead of oversubscribing them.

Kept apart from ``experiment`` because leasing knows nothing about experiments: a lease is a lock
file, and any command can hold one (``python -m text_recognizer.leasing.gpu_manager run -- CMD``).
Import each name from the module that defines it; this package re-exports nothing.
"""
