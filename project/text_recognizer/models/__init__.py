"""Models by name. A model owns a network, the dataset's config and the training loop."""

from __future__ import annotations

from text_recognizer.registry import Aliases, Entry

MODELS: dict[str, Entry] = {
    "CharacterModel": Entry(
        "text_recognizer.models.character_model:CharacterModel",
        kind="characters",
        help="one class per image; reports accuracy",
    ),
    "LineModel": Entry(
        "text_recognizer.models.line_model:LineModel",
        kind="lines",
        help="fixed-length output, per-position cross-entropy with a padding class (FSDL's)",
    ),
    "LineModelCtc": Entry(
        "text_recognizer.models.line_model_ctc:LineModelCtc",
        kind="lines",
        help="CTC loss with an explicit blank; greedy or beam decoding",
    ),
}

# FSDL 2021-2022's Lightning modules: the loss picks the model here.
MODEL_ALIASES = Aliases(
    "FSDL",
    same={"CTCLitModel": "LineModelCtc"},
    nearest={
        "BaseLitModel": ("CharacterModel", "or LineModel: the model is chosen by what it reads"),
        "TransformerLitModel": ("LineModelCtc", "CTC decoding; no transformer decoder here"),
    },
)
