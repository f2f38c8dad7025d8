"""Bad input to every subcommand: exactly one line on stderr naming what is wrong, exit 2, and nothing
written to (or lost from) the output location.

Cases per subcommand, where the subcommand has such an input: an unknown option, a value of the wrong
type, a missing required option, a missing path, an unreadable path (mode 000, read by root without
CAP_DAC_OVERRIDE so the permission bits hold), a directory where a file is expected, an empty file, a
malformed file and a binary (non-UTF-8) file of the right extension. Most run in this process through
`main()`; the unreadable ones and a few others run through the real entry point in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.cli.main import app, main
from tests.unit.llm_tiny import save_tiny_lm
from tests.unit.prune_tiny import write_tiny_task

ROOT = Path(__file__).resolve().parents[2]

# per extension: (malformed text, binary) content of a file of that kind
MALFORMED = {
    "json": (b'{"version": 1, "stages": [', b'{"version": 1\xff\xfe}'),
    "npz": (b"PK\x03\x04 truncated, not a zip archive", b"\x93NUMPY\xff\xfe\x00\x01garbage"),
    "toml": (b"version = 1\n[[board\nname = ", b'version = 1\nname = "\xff\xfe"\n'),
    "db": (b"SQLite format 3\x00 but nothing after the header", b"\xff\xfe\x00\x01" * 64),
    "gguf": (b"GGUF\x03\x00\x00\x00 truncated header", b"\xff\xfe\x00\x01 not a GGUF file" * 8),
    "txt": (b"", b"\xff\xfe\x00\x01 not UTF-8 text" * 8),
}
PATH_KINDS = ("missing", "unreadable", "directory", "empty", "malformed", "binary")


@dataclass(frozen=True)
class Command:
    """A valid invocation of one subcommand; `{in}` is the input the path cases replace."""

    argv: tuple[str, ...]
    ext: str | None = None  # extension of the `{in}` file; None: no file input
    typed: tuple[str, str] | None = None  # (option, a value of the wrong type)
    required: str | None = None  # an option (with its value) or argument dropped for the missing case
    out: str | None = None  # "file" / "dir": an earlier result there must survive; "absent": stays absent
    state_file: bool = False  # `{in}` is a farm state dir; the path cases break its state.json
    kinds: tuple[str, ...] = PATH_KINDS


COMMANDS: dict[str, Command] = {
    "demo train": Command(("demo", "train"), typed=("--threads", "lots")),
    "demo run": Command(("demo", "run", "--out", "{out}"), typed=("--trials", "many"), out="dir"),
    "prune": Command(
        ("prune", "--model", "{model}", "--schedule", "{in}", "--out", "{out}"),
        ext="json", typed=("--calib-n", "half"), required="--schedule", out="absent",
    ),
    "sia": Command(
        ("sia", "--model", "{model}", "--data", "{in}", "--out", "{out}"),
        ext="npz", typed=("--subsets", "ten"), required="--model", out="file",
    ),
    "compile": Command(
        ("compile", "--model", "{model}", "--board", "{in}"), ext="toml", typed=("--tune-trials", "1.5"),
        required="--board",
    ),
    "runtime build": Command(
        ("runtime", "build", "--arch", "x86_64"), typed=("--jobs", "all"), required="--arch"
    ),
    "boards list": Command(("boards", "list", "--farm", "{in}"), ext="toml"),
    "boards check": Command(("boards", "check", "--farm", "{in}"), ext="toml"),
    "bench": Command(
        ("bench", "--board", "here", "--selftest", "--farm", "{in}", "--out", "{out}"),
        ext="toml", typed=("--min-iters", "x"), required="--board", out="file",
    ),
    "tune": Command(
        ("tune", "--model", "{model}", "--calib", "{in}", "--val", "{val}", "--out", "{out}"),
        ext="npz", typed=("--trials", "some"), required="--model", out="dir",
    ),
    "nightly": Command(
        ("nightly", "--farm", "{farm}", "--suite", "{in}", "--out", "{out}"),
        ext="toml", typed=("--min-seconds", "soon"), required="--suite", out="dir",
    ),
    "report": Command(
        ("report", "--study", "s", "--storage", "sqlite:///{in}", "--out", "{out}"),
        ext="db", typed=("--trial", "best"), required="--study", out="dir",
    ),
    "models list": Command(("models", "list")),
    "models import-gguf": Command(
        ("models", "import-gguf", "--gguf", "{in}", "--name", "tiny-import"), ext="gguf",
        typed=("--threads", "many"),
    ),
    "models perplexity": Command(
        ("models", "perplexity", "--model", "{causal}", "--seq-len", "16", "--text", "{in}"), ext="txt",
        typed=("--seq-len", "long"), required="--model",
        kinds=("missing", "unreadable", "directory", "empty", "binary"),
    ),
    # a missing state dir is no error (no farm yet), so the farm has no missing-path case
    "farm up": Command(
        ("farm", "up", "--arch", "aarch64", "--no-runtime", "--state-dir", "{in}"), ext="json",
        typed=("--count", "two"), state_file=True, kinds=PATH_KINDS[1:],
    ),
    "farm status": Command(("farm", "status", "--state-dir", "{in}"), ext="json", state_file=True,
                           kinds=PATH_KINDS[1:]),
    "farm down": Command(("farm", "down", "--state-dir", "{in}"), ext="json", state_file=True,
                         kinds=PATH_KINDS[1:]),
    "farm reboot": Command(("farm", "reboot", "qemu-a64-0", "--state-dir", "{in}"), ext="json",
                           required="qemu-a64-0", state_file=True, kinds=PATH_KINDS[1:]),
}  # fmt: skip


@dataclass
class Case:
    argv: list[str]
    names: list[str]  # every one of these must be in the error line
    out: Path | None
    out_kind: str | None


def _leaf_commands() -> set[str]:
    import typer.main

    from harness.cli.main import _register

    _register()
    names: set[str] = set()

    def walk(cmd: object, prefix: str) -> None:
        subs = getattr(cmd, "commands", None)
        if not subs:
            names.add(prefix)
            return
        for name, sub in subs.items():
            walk(sub, f"{prefix} {name}".strip())

    walk(typer.main.get_command(app), "")
    return names


def test_every_subcommand_is_in_the_sweep() -> None:
    assert _leaf_commands() == set(COMMANDS)


def _ids() -> list[tuple[str, str]]:
    cases = []
    for name, c in COMMANDS.items():
        cases.append((name, "unknown-option"))
        if c.typed:
            cases.append((name, "wrong-type"))
        if c.required:
            cases.append((name, "missing-required"))
        if c.ext:
            cases += [(name, k) for k in c.kinds if k != "unreadable"]
    return cases


def _params() -> list[object]:
    # `farm up` refuses non-root users before it reads its state: like the farm tests, these need root
    not_root = pytest.mark.skipif(os.geteuid() != 0, reason="hilt farm up needs root")
    return [
        pytest.param(
            n,
            k,
            id=f"{n.replace(' ', '-')}-{k}",
            marks=[not_root] if n == "farm up" and k in PATH_KINDS else [],
        )
        for n, k in _ids()
    ]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-input")
    task = write_tiny_task(root / "task")
    farm = root / "farm.toml"
    farm.write_text(
        'version = 1\n[[board]]\nname = "here"\nprofile = "local"\n[board.transport]\nkind = "local"\n'
    )
    causal = save_tiny_lm(root / "causal")
    return {"root": root, "model": task["model"], "val": task["val"], "farm": farm, "causal": causal}


def _make_input(root: Path, c: Command, kind: str) -> tuple[str, Path]:
    """The `{in}` argument for this kind, and the path the error must name."""
    assert c.ext is not None
    if c.state_file:
        state_dir = root / f"state-{kind}"
        state_dir.mkdir()
        target = state_dir / "state.json"
    else:
        state_dir = None
        target = root / f"input-{kind}.{c.ext}"
    if kind == "directory":
        target.mkdir()
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind in ("malformed", "unreadable"):
        target.write_bytes(MALFORMED[c.ext][0])
        if kind == "unreadable":
            target.chmod(0)
    elif kind == "binary":
        target.write_bytes(MALFORMED[c.ext][1])
    return str(state_dir or target), target


def _case(inputs: dict[str, Path], tmp_path: Path, name: str, kind: str) -> Case:
    c = COMMANDS[name]
    values = {k: str(v) for k, v in inputs.items() if k != "root"}
    values["in"] = str(tmp_path / "not-given")
    names: list[str] = []
    if kind in PATH_KINDS:
        values["in"], target = _make_input(tmp_path, c, kind)
        names = [str(target)]
        if kind == "unreadable":
            names.append("Permission denied|not readable")
    out = tmp_path / ("out.json" if c.out == "file" else "out") if c.out else None
    if out is not None:
        values["out"] = str(out)
        if c.out == "file":
            out.write_text("earlier result\n")
        elif c.out == "dir":
            out.mkdir()
            (out / "earlier.txt").write_text("earlier result\n")
    argv = [_fill(a, values) for a in c.argv]
    if kind == "unknown-option":
        argv.append("--no-such-option")
        names = ["--no-such-option", name.split()[-1]]
    elif kind == "wrong-type":
        assert c.typed
        argv += list(c.typed)
        names = [c.typed[0], "Invalid value"]
    elif kind == "missing-required":
        assert c.required
        i = argv.index(c.required)
        argv = argv[:i] + argv[i + (2 if c.required.startswith("--") else 1) :]
        names = [c.required if c.required.startswith("--") else "argument 'board'", "Missing"]
    return Case(argv, names, out, c.out)


def _fill(arg: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        arg = arg.replace("{" + k + "}", v)
    return arg


def _snapshot(out: Path | None) -> object:
    if out is None or not out.exists():
        return None
    if out.is_file():
        return out.read_bytes()
    return sorted((str(p.relative_to(out)), p.read_bytes() if p.is_file() else None) for p in out.rglob("*"))


def _check(case: Case, rc: int, err: str, before: object) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, (case.argv, rc, err)
    assert len(lines) == 1, (case.argv, err)
    assert lines[0].startswith("error: "), lines[0]
    for name in case.names:  # each, or one of its |-separated alternatives
        assert any(alt in lines[0] for alt in name.split("|")), (name, lines[0])
    assert "Traceback" not in err
    if case.out_kind == "absent":
        assert case.out is not None and not case.out.exists(), f"{case.out} was written"
    else:
        assert _snapshot(case.out) == before, f"{case.out} changed"


@pytest.fixture()
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in an empty directory with its own cache, so no default path is touched by accident."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HILT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HILT_FARM", raising=False)
    monkeypatch.delenv("HILT_STORAGE", raising=False)
    yield tmp_path


@pytest.mark.parametrize(("name", "kind"), _params())
def test_bad_input_is_one_line_and_exit_2(
    name: str, kind: str, inputs: dict[str, Path], isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = _case(inputs, isolated, name, kind)
    before = _snapshot(case.out)
    rc = main(case.argv)
    _check(case, rc, capsys.readouterr().err, before)
    assert not (isolated / "hilt-runs").exists()  # no default output location written either


def _entry(argv: list[str], cwd: Path, *pre: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HILT_CACHE": str(cwd / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [*pre, sys.executable, "-m", "harness.cli.main", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


HELPER = """
import contextlib, io, json, sys
from harness.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    results.append([rc, err.getvalue()])
print(json.dumps(results))
"""


def test_unreadable_inputs_without_root_privileges(inputs: dict[str, Path], isolated: Path) -> None:
    """chmod 000 holds even for root once CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH are dropped
    (a real unprivileged uid cannot run this interpreter: it lives under /root)."""
    caps = "-dac_override,-dac_read_search"
    drop = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"] if os.geteuid() == 0 else []
    assert not drop or shutil.which("setpriv"), "setpriv (util-linux) is needed to drop root's capabilities"
    names = [n for n, c in COMMANDS.items() if c.ext and "unreadable" in c.kinds]
    if os.geteuid() != 0:
        names.remove("farm up")  # refuses non-root users before it reads its state
    cases = []
    for name in names:
        work = isolated / name.replace(" ", "-")
        work.mkdir()
        cases.append(_case(inputs, work, name, "unreadable"))
    befores = [_snapshot(c.out) for c in cases]
    probe = subprocess.run([*drop, "cat", str(cases[0].names[0])], capture_output=True, text=True)
    assert probe.returncode != 0 and "Permission denied" in probe.stderr  # the bits really hold
    env = {**os.environ, "HILT_CACHE": str(isolated / "cache"), "PYTHONPATH": str(ROOT)}
    cmd = [*drop, sys.executable, "-c", HELPER, json.dumps([c.argv for c in cases])]
    out = subprocess.run(cmd, cwd=isolated, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for case, before, (rc, err) in zip(cases, befores, json.loads(out.stdout), strict=True):
        _check(case, rc, err, before)
    # and one through the real entry point
    real = _entry(cases[0].argv, isolated, *drop)
    _check(cases[0], real.returncode, real.stderr, befores[0])


@pytest.mark.parametrize(("name", "kind"), [("bench", "unknown-option"), ("tune", "wrong-type"),
                                            ("prune", "missing"), ("nightly", "malformed")])  # fmt: skip
def test_the_real_entry_point_prints_one_line(
    inputs: dict[str, Path], isolated: Path, name: str, kind: str
) -> None:
    case = _case(inputs, isolated, name, kind)
    before = _snapshot(case.out)
    out = _entry(case.argv, isolated)
    _check(case, out.returncode, out.stderr, before)
    assert out.stdout.strip() == ""


def test_an_os_error_from_a_command_is_one_line_not_a_traceback(
    inputs: dict[str, Path], isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a HiltError: writing the report onto a directory fails in the OS, and says so in one line."""
    out = isolated / "taken"
    out.mkdir()
    argv = ["sia", "--model", str(inputs["model"]), "--data", str(inputs["val"]), "--granularity", "layer",
            "--ratios", "0.5", "--subsets", "2", "--max-units", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: Is a directory: "), err
    assert str(out) in err


def test_a_bench_timeout_below_one_second_is_one_line_and_exit_2(
    inputs: dict[str, Path], isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = isolated / "runs"
    data = str(inputs["val"])
    argv = ["tune", "--model", str(inputs["model"]), "--calib", data, "--val", data,
            "--bench-timeout", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--bench-timeout" in err, err
    assert not out.exists()


def test_a_simulated_board_with_a_malformed_simulate_field_is_one_line_and_exit_2(
    isolated: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    farm = isolated / "farm.toml"
    farm.write_text('version = 1\n[[board]]\nname = "s"\nprofile = "local"\n'
                    'transport = { kind = "local", agent_dir = "/tmp/s", simulate = "maybe" }\n')  # fmt: skip
    assert main(["boards", "list", "--farm", str(farm)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "board[0] 's'" in err and "simulate" in err, err
