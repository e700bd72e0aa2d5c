"""Build the C parts: the System V IPC calls ctypes cannot describe portably, and the hook's
clean-environment trampoline (see ipcjanitor/ipcjanitor-hook.c)."""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WARNINGS = ["-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
TRAMPOLINE = "ipcjanitor-hook"


class BuildExt(build_ext):
    """Also link the trampoline, statically, next to the extension module.

    It lands in the package directory of every kind of install (wheel, pip -e, .deb, .rpm),
    so `install-hook` finds the one that belongs to the running ipcjanitor without a search.
    Static, because a dynamically linked program would have ld.so load the service's
    LD_PRELOAD into it, as root, before its first instruction.
    """

    def run(self) -> None:
        super().run()
        objects = self.compiler.compile(
            [f"ipcjanitor/{TRAMPOLINE}.c"],
            output_dir=self.build_temp,
            extra_postargs=["-O2", "-fPIE", *WARNINGS, "-Werror"],
        )
        self.compiler.link_executable(
            objects,
            TRAMPOLINE,
            output_dir=self._package_dir(),
            extra_postargs=["-static-pie", "-Wl,-z,relro,-z,now"],
        )

    def _package_dir(self) -> str:
        return os.path.dirname(self.get_ext_fullpath("ipcjanitor._sysvipc"))

    def get_outputs(self) -> list[str]:
        return [*super().get_outputs(), os.path.join(self._package_dir(), TRAMPOLINE)]


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        Extension(
            "ipcjanitor._sysvipc",
            sources=["ipcjanitor/_sysvipc.c"],
            extra_compile_args=["-O2", *WARNINGS],
        )
    ],
)
