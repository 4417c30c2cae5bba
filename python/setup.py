"""Ships `vllm_profiler.pth` at the top of site-packages, next to the package: the start-up
hook of the zero-code vLLM integration (pyproject.toml has the rest of the metadata)."""

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildWithPth(build_py):
    def run(self):
        super().run()
        shutil.copy(os.path.join(HERE, "vllm_profiler.pth"), self.build_lib)


setup(cmdclass={"build_py": BuildWithPth})
