"""Installs the `text_recognizer` package from project/ (src layout)."""

from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]

setup(
    name="text_recognizer",
    version="0.1.0",
    description="Handwriting recognition experiments from a JSON config (FSDL style), on PyTorch",
    long_description=(here / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    package_dir={"": "project"},
    packages=find_packages("project"),
    install_requires=requirements,
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-timeout>=2",
            "ruff==0.17.6",  # pinned: lint and format results must not drift between machines
            # tests/test_notebooks.py executes notebooks/*.ipynb
            "nbformat>=5",
            "nbclient>=0.7",
            "ipykernel>=6",
        ]
    },
    entry_points={
        "console_scripts": ["run-experiment=text_recognizer.cli:run_experiment_main"],
    },
)
