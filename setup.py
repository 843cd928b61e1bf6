"""The packages of the wheel; everything else is in pyproject.toml.

The YAML recipes at the repository root (recipes/<family>/<name>.yaml, and recipes/accelerate/) become the
package data `tunelab/recipes/` of an installed tunelab: one copy, which a checkout keeps using as paths and
an installed tunelab finds by name (tunelab.shipped). Listed here rather than in pyproject.toml because the
recipe folders are found, not written down, so a new family's folder ships without an edit here.
"""

from setuptools import find_namespace_packages, find_packages, setup

recipe_folders = [f"tunelab.recipes.{name}" for name in find_namespace_packages("recipes")]
setup(
    packages=[*find_packages("src"), "tunelab.recipes", *recipe_folders],
    package_dir={"": "src", "tunelab.recipes": "recipes"},
    package_data={package: ["*.yaml"] for package in recipe_folders},
)
