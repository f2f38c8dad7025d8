"""The agent's content-addressed store: resumable uploads (`put`), `has`, and `install`, which
assembles a bundle or runtime directory from stored objects and refuses a hash mismatch.

Layout under the cache directory: objects/<sha>, partial/<sha> (uploads in progress),
bundle/<tree>/, runtime/<tree>/, tmp/ (staging), bench.lock (see `lock.py`).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, List, Union

from hilt_base.hashing import sha256_file, tree_hash

from .sysfs import listdir
from .wire import DICT_SPAN, KINDS, RUNNER_NAME, AgentFailure, check_chunk_args, decompress_chunk, is_sha

SUBDIRS = ("objects", "partial", "bundle", "runtime", "tmp")
HANDLES = 256  # upload handles remembered
AHEAD_MAX = 8 << 20  # bytes of out-of-order chunks held in memory per upload (a pipelining host's window)


class Packed:
    """A zdict chunk that arrived past a gap: decoded once the bytes it was primed with are stored."""

    __slots__ = ("codec", "data", "n", "crc")

    def __init__(self, codec: str, data: bytes, n: int, crc: int) -> None:
        self.codec, self.data, self.n, self.crc = codec, data, n, crc

    def __len__(self) -> int:
        return self.n

    def decode(self, before: bytes) -> bytes:
        return decompress_chunk(self.codec, self.data, self.n, self.crc, before)


Chunk = Union[bytes, Packed]


def safe_name(name: Any) -> bool:
    """A plain file name: nothing that could climb out of the directory it is installed in."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and "\0" not in name
    )


class Store:
    def __init__(self, root: str) -> None:
        self.root = root
        # sha -> {offset: chunk}: chunks that arrived past a gap (an earlier chunk was lost on the line);
        # appended once the gap is filled, so partial/<sha> is always a contiguous, resumable prefix
        self.ahead: Dict[str, Dict[int, Chunk]] = {}
        self.handles: Dict[int, str] = {}  # upload handle -> sha256 (see `put`)
        self._next_handle = 0
        for sub in SUBDIRS:
            os.makedirs(os.path.join(root, sub), exist_ok=True)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def held(self, sha: str) -> bool:
        return any(os.path.exists(self.path(sub, sha)) for sub in ("objects", "bundle", "runtime"))

    def has(self, args: Dict[str, Any]) -> Dict[str, Any]:
        hashes = args.get("hashes")
        if not isinstance(hashes, list):
            raise AgentFailure("bad_request", "has needs a list 'hashes'")
        return {"held": [h for h in hashes if is_sha(h) and self.held(h)]}

    def put(self, args: Dict[str, Any], body: bytes) -> Dict[str, Any]:
        """Chunked, resumable, content-addressed upload: op begin / chunk / commit.

        `begin` also answers a small `handle` that chunks may name instead of the sha256 (64 bytes
        less in every chunk header: on a noisy line shorter frames get through more often).
        A chunk may come compressed (`z`, `n`, `crc`: see `wire`); one that does not decode to
        exactly its bytes is refused as `bad_chunk`, and nothing of it is stored."""
        sha = args.get("sha256")
        if sha is None and "handle" in args:
            sha = self.handles.get(args["handle"]) if isinstance(args["handle"], int) else None
            if sha is None:
                raise AgentFailure("bad_request", "unknown upload handle; begin the upload again")
        if not is_sha(sha):
            raise AgentFailure("bad_request", "put needs a lowercase hex 'sha256'")
        final = self.path("objects", sha)
        partial = self.path("partial", sha)
        op = args.get("op", "begin")
        if os.path.exists(final):
            return {"offset": os.path.getsize(final), "complete": True}
        if op == "begin":
            size = os.path.getsize(partial) if os.path.exists(partial) else 0
            return {"offset": size, "complete": False, "handle": self._handle(sha)}
        if op == "chunk":
            offset = args.get("offset")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise AgentFailure("bad_request", "put chunk needs an integer 'offset' >= 0")
            if "z" not in args:
                return self._chunk(sha, partial, offset, body)
            # compressed on the host; offsets count uncompressed bytes
            codec, n, crc = args["z"], args.get("n"), args.get("crc")
            check_chunk_args(codec, n, crc)
            before = b""
            if codec == "zdict" and offset > 0:
                if offset > self._size(partial):  # primed with bytes not stored yet: decode it later
                    return self._chunk(sha, partial, offset, Packed(codec, body, n, crc))
                before = self._read(partial, offset)
            return self._chunk(sha, partial, offset, decompress_chunk(codec, body, n, crc, before))
        if op == "commit":
            if not os.path.exists(partial):
                raise AgentFailure("missing_file", "nothing uploaded for %s" % sha)
            self.ahead.pop(sha, None)
            actual = sha256_file(partial)
            if actual != sha:
                os.unlink(partial)
                raise AgentFailure(
                    "hash_mismatch", "uploaded data hashes to %s, not %s; refused" % (actual, sha)
                )
            os.replace(partial, final)
            return {"offset": os.path.getsize(final), "complete": True}
        raise AgentFailure("bad_request", "unknown put op %r" % (op,))

    def _handle(self, sha: str) -> int:
        for handle, known in self.handles.items():
            if known == sha:
                return handle
        self._next_handle += 1
        self.handles[self._next_handle] = sha
        while len(self.handles) > HANDLES:
            del self.handles[min(self.handles)]
        return self._next_handle

    @staticmethod
    def _size(partial: str) -> int:
        return os.path.getsize(partial) if os.path.exists(partial) else 0

    @staticmethod
    def _read(partial: str, offset: int) -> bytes:
        """The stored bytes just before `offset` that a zdict chunk there was primed with."""
        start = max(0, offset - DICT_SPAN)
        with open(partial, "rb") as f:
            f.seek(start)
            return f.read(offset - start)

    def _chunk(self, sha: str, partial: str, offset: int, body: Chunk) -> Dict[str, Any]:
        """Append a chunk at the end of the prefix; hold one from past a gap; ignore a duplicate.

        The answer's `offset` is always the contiguous prefix stored; `ahead: true` says this chunk
        is held for later (the host need not resend it). A held zdict chunk that does not decode
        once its gap is filled is dropped; the host sends it again."""
        size = self._size(partial)
        held = self.ahead.setdefault(sha, {})
        if offset > size:
            if body and (offset in held or sum(len(b) for b in held.values()) + len(body) <= AHEAD_MAX):
                held[offset] = body
                return {"offset": size, "complete": False, "ahead": True}
            return {"offset": size, "complete": False}
        with open(partial, "ab") as f:
            if offset + len(body) > size:  # new bytes (a resent chunk may overlap what is stored)
                f.write(body[size - offset :])
                size = offset + len(body)
            while held:  # the gap before held chunks may be filled now
                starts = [o for o in held if o <= size]
                if not starts:
                    break
                for o in starts:
                    chunk = held.pop(o)
                    if isinstance(chunk, Packed):
                        f.flush()
                        try:
                            chunk = chunk.decode(self._read(partial, o))
                        except AgentFailure:
                            continue
                    if o + len(chunk) > size:
                        f.write(chunk[size - o :])
                        size = o + len(chunk)
        if not held:
            self.ahead.pop(sha, None)
        return {"offset": size, "complete": False}

    def install(self, args: Dict[str, Any]) -> Dict[str, Any]:
        """Assemble a bundle or runtime directory from stored objects; refuse a hash mismatch."""
        kind = args.get("kind")
        if kind not in KINDS:
            raise AgentFailure("bad_request", "install kind must be one of %s" % (KINDS,))
        tree = args.get("hash")
        files = args.get("files")
        if not is_sha(tree) or not isinstance(files, dict) or not files:
            raise AgentFailure("bad_request", "install needs 'hash' and a non-empty 'files' map")
        for name, sha in files.items():
            if not safe_name(name) or not is_sha(sha):
                raise AgentFailure("bad_request", "bad file entry %r: %r" % (name, sha))
        hashed = dict(files)
        if kind == "bundle":
            hashed.pop("metadata.json", None)
        if tree_hash(hashed) != tree:
            raise AgentFailure(
                "hash_mismatch", "%s files hash to %s, not %s" % (kind, tree_hash(hashed), tree)
            )
        target = self.path(kind, tree)
        if os.path.isdir(target):
            return {"path": target, "installed": False}
        missing = [n for n, s in files.items() if not os.path.exists(self.path("objects", s))]
        if missing:
            raise AgentFailure("missing_file", "upload these first: %s" % ", ".join(sorted(missing)))
        staging = self.path("tmp", "%s-%d" % (tree, os.getpid()))
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging)
        for name, sha in files.items():
            dst = os.path.join(staging, name)
            shutil.copyfile(self.path("objects", sha), dst)
            if kind == "runtime" and name == RUNNER_NAME:
                os.chmod(dst, 0o755)
        if kind == "bundle" and "metadata.json" in files:
            self._check_bundle_metadata(staging, hashed)
        if kind == "runtime" and args.get("versions"):
            with open(os.path.join(staging, "versions.json"), "w") as f:
                json.dump(args["versions"], f)
        try:
            os.replace(staging, target)
        except OSError:
            if not os.path.isdir(target):
                raise
            shutil.rmtree(staging, ignore_errors=True)  # another agent on this store installed it first
            return {"path": target, "installed": False}
        return {"path": target, "installed": True}

    def _check_bundle_metadata(self, staging: str, hashed: Dict[str, str]) -> None:
        try:
            with open(os.path.join(staging, "metadata.json")) as f:
                meta = json.load(f)
        except ValueError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise AgentFailure("bad_bundle", "metadata.json is not JSON: %s" % exc) from None
        listed = meta.get("files") if isinstance(meta, dict) else None
        if listed != hashed:
            shutil.rmtree(staging, ignore_errors=True)
            raise AgentFailure("hash_mismatch", "metadata.json 'files' does not match the uploaded files")

    def runtimes(self) -> List[Dict[str, Any]]:
        out = []
        base = self.path("runtime")
        for name in listdir(base):
            info: Dict[str, Any] = {"hash": name}
            path = os.path.join(base, name, "versions.json")
            if os.path.exists(path):
                try:
                    with open(path) as f:
                        info.update(json.load(f))
                except ValueError:
                    pass
            out.append(info)
        return out
