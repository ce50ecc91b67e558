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
    package_data={"text_recognizer.serving": ["static/*"]},
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
            # tests/test_serve_browser.py drives Debian's chromium through chromedriver
            "selenium>=4.10",
            # FastAPI's TestClient
            "httpx>=0.24",
        ],
        # bench/bench_peers.py only (never a runtime dependency): the Lightning Trainer it races
        "bench": ["lightning==2.6.6"],
    },
    entry_points={
        # Every command (kraken's way); the training/*.py scripts and `python -m` keep working.
        "console_scripts": [
            "run-experiment=text_recognizer.run.cli:run_experiment_main",
            "prepare-experiments=text_recognizer.orchestration.prepare:prepare_experiments_main",
            "run-sweep=text_recognizer.orchestration.trial_args:run_sweep_main",
            "local-sweep=text_recognizer.orchestration.local_sweep:local_sweep_main",
            "compare-runs=text_recognizer.orchestration.compare:compare_main",
            "evaluate-run=text_recognizer.evaluate:evaluate_main",
            "export-model=text_recognizer.export:export_main",
            "predict-text=text_recognizer.predict:predict_main",
            "page-ocr=text_recognizer.page_ocr:page_ocr_main",
            "paragraph-ocr=text_recognizer.paragraph_ocr:paragraph_ocr_main",
            "serve-text=text_recognizer.serve:serve_main",
            "gpu-manager=text_recognizer.leasing.gpu_manager:main",
            "update-metadata=text_recognizer.datasets.update_metadata:update_metadata_main",
        ],
    },
)
