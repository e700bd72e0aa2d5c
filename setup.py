"""Build the one C extension: the System V IPC calls that ctypes cannot describe portably."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ipcjanitor._sysvipc",
            sources=["ipcjanitor/_sysvipc.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)
