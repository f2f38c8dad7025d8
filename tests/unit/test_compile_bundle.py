"""Bundle writing and verification: content addressing and a clear error for every malformation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.compile.bundle import BUNDLE_VERSION, bundle_hash, load_bundle, sha256_file, write_bundle
from harness.errors import ArtifactError


def _metadata() -> dict:
    return {
        "hilt_version": "0.1.0",
        "tvm_version": "0.27.0.post1",
        "tvm_ffi_version": "0.1.14.post0",
        "profile": "local",
        "target": {"kind": "llvm", "mtriple": "x86_64-linux-gnu"},
        "arch": "x86_64",
        "build_time": "2026-01-01T00:00:00+00:00",
        "build_seconds": 1.0,
        "cache_key": "k" * 64,
    }


def _make(tmp_path: Path, payload: bytes = b"\x7fELF fake library") -> Path:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "model.so").write_bytes(payload)
    ids = np.arange(8, dtype=np.int64).reshape(1, 8)
    logits = np.array([[0.5, -1.25, 2.0]], dtype=np.float32)
    bundle = write_bundle(
        staging,
        tmp_path / "bundles",
        input_name="input_ids",
        input_array=ids,
        expected=logits,
        manifest={"version": 1, "layers": [0, 2]},
        metadata=_metadata(),
    )
    return bundle.directory


def test_bundle_is_named_by_its_hash_and_round_trips(tmp_path: Path) -> None:
    d = _make(tmp_path)
    b = load_bundle(d)
    assert d.name == b.sha256
    files = json.loads((d / "metadata.json").read_text())["files"]
    assert set(files) == {"model.so", "input.json", "input.bin", "expected.bin", "manifest.json"}
    assert files["model.so"] == sha256_file(d / "model.so")
    assert b.sha256 == bundle_hash(files)
    assert b.metadata.version == BUNDLE_VERSION
    assert b.input_spec.shape == [1, 8] and b.input_spec.dtype == "int64"
    np.testing.assert_array_equal(b.input_array(), np.arange(8).reshape(1, 8))
    np.testing.assert_array_equal(b.expected(), np.array([0.5, -1.25, 2.0], dtype=np.float32))
    assert b.manifest() == {"version": 1, "layers": [0, 2]}
    assert not (tmp_path / "staging").exists()


def test_hash_is_over_sorted_name_lines() -> None:
    files = {"b": "2" * 64, "a": "1" * 64}
    import hashlib

    want = hashlib.sha256(f"a:{'1' * 64}\nb:{'2' * 64}\n".encode()).hexdigest()
    assert bundle_hash(files) == want


def test_same_content_is_stored_once(tmp_path: Path) -> None:
    first = _make(tmp_path)
    second_root = tmp_path / "again"
    second_root.mkdir()
    second = _make(second_root)
    assert first.name == second.name
    # different library bytes -> different bundle
    other_root = tmp_path / "other"
    other_root.mkdir()
    assert _make(other_root, b"another library").name != first.name


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    d = _make(tmp_path)
    (d / "model.so").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="model.so has sha256"):
        load_bundle(d)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    d = _make(tmp_path)
    (d / "expected.bin").unlink()
    with pytest.raises(ArtifactError, match="missing expected.bin"):
        load_bundle(d)


def test_wrong_directory_name_is_refused(tmp_path: Path) -> None:
    d = _make(tmp_path)
    wrong = d.parent / ("0" * 64)
    shutil.copytree(d, wrong)
    with pytest.raises(ArtifactError, match="named 000000000000"):
        load_bundle(wrong)
    # any other name (e.g. a user's copy) is fine: the files still verify
    copy = d.parent / "my-copy"
    shutil.copytree(d, copy)
    assert load_bundle(copy).sha256 == d.name


def test_missing_metadata_is_refused(tmp_path: Path) -> None:
    d = _make(tmp_path)
    (d / "metadata.json").unlink()
    with pytest.raises(ArtifactError, match="no metadata.json"):
        load_bundle(d)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda m: m.pop("files"), "files: Field required"),
        (lambda m: m.update(version=99), "bundle version 99"),
        (lambda m: m.update(unknown=1), "unknown: Extra inputs"),
        (lambda m: m["files"].pop("input.bin"), "does not list input.bin"),
    ],
)
def test_bad_metadata_is_refused(tmp_path: Path, edit, match: str) -> None:
    d = _make(tmp_path)
    meta = json.loads((d / "metadata.json").read_text())
    edit(meta)
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=match):
        load_bundle(d)


def test_metadata_not_json_is_refused(tmp_path: Path) -> None:
    d = _make(tmp_path)
    (d / "metadata.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="metadata.json"):
        load_bundle(d)


def _rehash(d: Path, name: str, content: bytes) -> Path:
    """Replace a file and fix metadata, as a careless tool would; returns the renamed dir."""
    (d / name).write_bytes(content)
    meta = json.loads((d / "metadata.json").read_text())
    meta["files"][name] = sha256_file(d / name)
    (d / "metadata.json").write_text(json.dumps(meta))
    new = d.parent / bundle_hash(meta["files"])
    d.rename(new)
    return new


def test_input_size_mismatch_is_refused(tmp_path: Path) -> None:
    d = _rehash(_make(tmp_path), "input.bin", b"\x00" * 12)
    with pytest.raises(ArtifactError, match="has 12 bytes; input.json implies 64"):
        load_bundle(d)


def test_bad_input_spec_is_refused(tmp_path: Path) -> None:
    spec = json.dumps({"name": "input_ids", "shape": [1, 8], "dtype": "complex128"}).encode()
    d = _rehash(_make(tmp_path), "input.json", spec)
    with pytest.raises(ArtifactError, match="dtype 'complex128'"):
        load_bundle(d)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a directory"):
        load_bundle(tmp_path / "nope")


def test_write_without_library_is_refused(tmp_path: Path) -> None:
    staging = tmp_path / "s"
    staging.mkdir()
    with pytest.raises(ArtifactError, match="no model.so"):
        write_bundle(
            staging,
            tmp_path / "b",
            input_name="x",
            input_array=np.zeros((1, 2), dtype=np.int64),
            expected=np.zeros(2, dtype=np.float32),
            manifest={},
            metadata=_metadata(),
        )
