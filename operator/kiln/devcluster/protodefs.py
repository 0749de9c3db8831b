"""The Kubernetes protobuf definitions, taken from a kubectl binary.

kubectl's typed generators send protobuf, so the dev cluster decodes it from the same
definitions kubectl encodes with: the `generated.proto` files of k8s.io/api and
k8s.io/apimachinery. Every Kubernetes Go binary carries them, registered by the generated code
as gzipped FileDescriptorProtos; `extract` finds them in a binary and writes one gzipped
FileDescriptorSet, `kubernetes.protoset.gz` beside this module (`make protos` regenerates it from
the newest kubectl on the machine).

    python -m kiln.devcluster.protodefs /usr/bin/kubectl.1.33
"""

from __future__ import annotations

import gzip
import pathlib
import sys
import zlib
from collections.abc import Iterator

from google.protobuf import descriptor_pb2, message

PROTOSET = pathlib.Path(__file__).with_name("kubernetes.protoset.gz")
_GZIP_MEMBER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00"  # how Go's compress/gzip starts a member it writes
_LARGEST_DESCRIPTOR = 4 << 20
_PREFIXES = ("k8s.io/api/", "k8s.io/apimachinery/")
# generated.proto once imported gogo's options; the descriptors keep the import but use none of them.
_GOGO = "github.com/gogo/protobuf/gogoproto/gogo.proto"


def _descriptors(binary: bytes) -> Iterator[descriptor_pb2.FileDescriptorProto]:
    start = binary.find(_GZIP_MEMBER)
    while start != -1:
        try:
            inflated = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(binary[start : start + _LARGEST_DESCRIPTOR])
            descriptor = descriptor_pb2.FileDescriptorProto.FromString(inflated)
        except (zlib.error, message.DecodeError):
            descriptor = None
        if descriptor is not None and descriptor.name.startswith(_PREFIXES) and descriptor.name.endswith(".proto"):
            yield descriptor
        start = binary.find(_GZIP_MEMBER, start + 1)


def extract(binary: pathlib.Path) -> descriptor_pb2.FileDescriptorSet:
    """The k8s.io/api and apimachinery definitions `binary` carries, ordered by name."""
    found = {descriptor.name: descriptor for descriptor in _descriptors(binary.read_bytes())}
    if not found:
        raise ValueError(f"{binary} carries no Kubernetes protobuf definitions")
    for descriptor in found.values():
        kept = [dependency for dependency in descriptor.dependency if dependency != _GOGO]
        del descriptor.dependency[:]
        descriptor.dependency.extend(kept)
    return descriptor_pb2.FileDescriptorSet(file=[found[name] for name in sorted(found)])


def load() -> descriptor_pb2.FileDescriptorSet:
    return descriptor_pb2.FileDescriptorSet.FromString(gzip.decompress(PROTOSET.read_bytes()))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kiln.devcluster.protodefs KUBECTL", file=sys.stderr)
        return 2
    definitions = extract(pathlib.Path(argv[0]))
    # mtime=0: the same binary always gives the same bytes, so the file changes only with kubectl.
    PROTOSET.write_bytes(gzip.compress(definitions.SerializeToString(deterministic=True), 9, mtime=0))
    print(f"{PROTOSET}: {len(definitions.file)} definitions from {argv[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
