"""Package discovery, with the repository's recipes/ folder shipped as ``lightning_xai.recipes.configs``.

Everything else (metadata, dependencies, entry points) is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["lightning_xai*"]), "lightning_xai.recipes.configs"],
    package_dir={"lightning_xai.recipes.configs": "recipes"},
)
