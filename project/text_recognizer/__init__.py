"""text_recognizer: handwriting recognition experiments from a JSON config."""

__version__ = "0.1.0"
