"""The API contract: buf lint, every element documented, committed stubs equal fresh ones."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOMAINS = (
    "identity",
    "catalog",
    "search",
    "profile",
    "recommend",
    "playback",
    "channels",
    "registry",
    "experiments",
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def test_buf_lint_passes() -> None:
    result = run(str(BIN / "buf"), "lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_domain_has_a_v1_proto() -> None:
    for domain in DOMAINS:
        assert list((ROOT / "protos/livemesh" / domain / "v1").glob("*.proto")), domain


def test_every_service_method_message_field_and_enum_value_is_documented(tmp_path: Path) -> None:
    out = tmp_path / "fds.binpb"
    result = run(str(BIN / "buf"), "build", "--as-file-descriptor-set", "-o", str(out))
    assert result.returncode == 0, result.stderr
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    undocumented: list[str] = []
    for file in fds.file:
        if not file.name.startswith("livemesh/"):
            continue
        comments = {
            tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
        }

        def check(
            path: tuple[int, ...], what: str, name: str = file.name, docs: dict = comments
        ) -> None:
            if not docs.get(path):
                undocumented.append(f"{name}: {what}")

        for i, message in enumerate(file.message_type):
            check((4, i), message.name)
            for j, field in enumerate(message.field):
                check((4, i, 2, j), f"{message.name}.{field.name}")
        for i, enum in enumerate(file.enum_type):
            check((5, i), enum.name)
            for j, value in enumerate(enum.value):
                check((5, i, 2, j), f"{enum.name}.{value.name}")
        for i, service in enumerate(file.service):
            check((6, i), service.name)
            for j, method in enumerate(service.method):
                check((6, i, 2, j), f"{service.name}.{method.name}")
    assert not undocumented, undocumented


def test_committed_stubs_equal_freshly_generated_ones(tmp_path: Path) -> None:
    result = run(str(ROOT / "scripts/gen_protos.sh"), str(tmp_path))
    assert result.returncode == 0, result.stderr
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh, "the generator wrote nothing"
    committed_dirs = {ROOT / "livemesh" / d / "v1" for d in DOMAINS}
    committed = sorted(
        p.relative_to(ROOT)
        for d in committed_dirs
        for p in d.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert [p for p in fresh if p.parent.name == "v1"] == committed
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, ROOT, [str(p) for p in fresh], shallow=False)
    assert not mismatch and not errors, f"stale stubs, run `make protos`: {mismatch + errors}"


def test_stubs_import_and_carry_the_services() -> None:
    from livemesh.playback.v1 import playback_pb2, playback_pb2_grpc

    assert "PlaybackService" in playback_pb2.DESCRIPTOR.services_by_name
    assert hasattr(playback_pb2_grpc, "PlaybackServiceStub")
