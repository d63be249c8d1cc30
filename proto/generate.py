"""Generate the Python gRPC modules from proto/annal/v1/annal.proto into annal/protocol/.

    python proto/generate.py            # regenerate in place
    python proto/generate.py --out DIR  # write elsewhere (the freshness test does this)

The generated modules are committed; tests/unit/test_proto_fresh.py fails when they are out of
date with the .proto. protoc writes ``from annal.v1 import annal_pb2``; the import is rewritten
to ``annal.protocol``, where the modules live (there is no ``annal.v1`` package).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO = "annal/v1/annal.proto"


def generate(out: pathlib.Path) -> list[pathlib.Path]:
    import tempfile

    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(
            ["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}",
             f"--grpc_python_out={tmp}", str(PROTO_DIR / PROTO)]
        )
        if rc != 0:
            raise SystemExit(f"protoc failed with exit code {rc}")
        written = []
        out.mkdir(parents=True, exist_ok=True)
        for name in ("annal_pb2.py", "annal_pb2.pyi", "annal_pb2_grpc.py"):
            text = (pathlib.Path(tmp) / "annal" / "v1" / name).read_text()
            text = text.replace("from annal.v1 import annal_pb2", "from annal.protocol import annal_pb2")
            (out / name).write_text(text)
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "annal" / "protocol")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
