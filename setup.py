"""LinNét: product categorization into the Google Product Taxonomy on Apache Beam and TensorFlow.

This file is also what Dataflow workers install from (`--setup_file ./setup.py`), so it carries
every runtime dependency, read from requirements.txt (the one place versions are pinned).
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="linnet",
    version="0.1.0",
    description="Hierarchical product categorization into the Google Product Taxonomy",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["linnet_core", "linnet_core.*", "pipelines", "pipelines.*",
                                    "serving", "serving.*", "schemas"]),
    package_data={"schemas": ["*.json"], "linnet_core": ["config/*.json"]},
    install_requires=_requirements(),
    entry_points={"console_scripts": ["linnet = pipelines.cli:main"]},
)
