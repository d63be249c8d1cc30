"""The one compiled part of Annal: annal.record._native (see annal/record/_native.c).

Everything else is declared in pyproject.toml. The extension is optional: on a machine without
a C compiler (or the Python headers) the build of it fails, this prints one line saying so, and
the install goes on with the pure-Python codec, which annal.record then uses
(``annal --version`` says which one runs).
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    """build_ext that never fails the install: a missing compiler means pure Python."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler at all (distutils raises before compiling)
            self._fallback(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # the compiler or linker failed
            self._fallback(exc)

    def _fallback(self, exc: BaseException) -> None:
        print(
            f"annal: the C extension annal.record._native was not built ({exc}); "
            "installing the pure-Python codec instead"
        )


setup(
    ext_modules=[
        Extension(
            "annal.record._native",
            sources=["annal/record/_native.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-missing-braces"],
        )
    ],
    cmdclass={"build_ext": optional_build_ext},
)
