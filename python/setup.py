"""Build hook: generates the gRPC stubs from the repository's proto file.

The stubs are not committed: `build_py` runs grpcio-tools' protoc on
`../proto/fedra/v1/fedra.proto` and writes `fedra/v1/fedra_pb2.py`, `fedra_pb2.pyi` and
`fedra_pb2_grpc.py` into the build (or, for an editable install, into `src/`, which
.gitignore excludes). The proto package `fedra.v1` is thus the Python module `fedra.v1`, so
the generated imports resolve inside this package. Building needs the repository checkout
(the proto file lives beside this directory) and grpcio-tools from PyPI; nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent / "proto"
PROTO_FILE = "fedra/v1/fedra.proto"


def generate_stubs(out: Path) -> None:
    """Runs protoc on the proto file into `out` (a directory holding the `fedra` package)."""
    source = PROTO_ROOT / PROTO_FILE
    if not source.is_file():
        raise SystemExit(
            f"fedra: cannot generate the gRPC stubs: {source} does not exist; build the "
            "package from a checkout of the fedra repository (pip install ./python)"
        )
    import grpc_tools  # a build requirement (pyproject.toml)
    from grpc_tools import protoc

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    package = out / "fedra" / "v1"
    package.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        PROTO_FILE,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"fedra: protoc failed on {source}")
    (package / "__init__.py").write_text(
        '"""Generated from proto/fedra/v1/fedra.proto at build time; do not edit."""\n'
    )


class BuildPyWithStubs(build_py):
    """`build_py`, then the stubs beside the copied sources."""

    def run(self) -> None:
        super().run()
        editable = getattr(self, "editable_mode", False)
        generate_stubs(HERE / "src" if editable else Path(self.build_lib))


os.chdir(HERE)
setup(cmdclass={"build_py": BuildPyWithStubs})
