"""The build puts what a student starts from into the package: every exercise stub (as a file and a
notebook) and the word list, as `grader/kit_files/`, and the files the kit is built from, for the
Gradescope bundle an installed kit writes. A checkout reads them from `exercises/`, `data/` and its
root (`grader.kit.kit_path`); the solutions never go in."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
KIT = {"exercises": ["*.py", "*.ipynb"], "data": ["names.txt"], ".": ["pyproject.toml", "setup.py", "README.md"]}


class BuildWithKit(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout itself
        kit = Path(self.build_lib) / "grader" / "kit_files"
        shutil.rmtree(kit, ignore_errors=True)  # (nothing left from an earlier build)
        for folder, patterns in KIT.items():
            target = kit / folder
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for source in sorted((ROOT / folder).glob(pattern)):
                    self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildWithKit})
