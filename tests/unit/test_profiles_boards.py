"""Board profiles: every required board kind loads, with CPU facts and targets TVM's LLVM accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from profiles.schema import available_profiles, load_profile

REQUIRED = ["local", "rpi4", "rpi5", "rk3588", "jetson-orin-nano-cpu", "visionfive2", "bpi-f3",
            "qemu-aarch64", "qemu-riscv64"]  # fmt: skip

# name -> (arch, cores, mcpu, toolchain prefix)
FACTS = {
    "rpi5": ("aarch64", 4, "cortex-a76", "aarch64-linux-gnu-"),
    "rk3588": ("aarch64", 8, "cortex-a76", "aarch64-linux-gnu-"),
    "jetson-orin-nano-cpu": ("aarch64", 6, "cortex-a78ae", "aarch64-linux-gnu-"),
    "visionfive2": ("riscv64", 4, "sifive-u74", "riscv64-linux-gnu-"),
    "bpi-f3": ("riscv64", 8, "spacemit-x60", "riscv64-linux-gnu-"),
}


def test_every_required_board_kind_exists() -> None:
    assert set(REQUIRED) <= set(available_profiles())


@pytest.mark.parametrize("name", REQUIRED)
def test_profile_is_consistent(name: str) -> None:
    p = load_profile(name)
    assert p.name == name
    target = p.target.as_tvm()
    assert isinstance(target, dict) and target["mtriple"].startswith(p.arch)
    assert p.toolchain.prefix == ("" if p.arch == "x86_64" else f"{p.arch}-linux-gnu-")
    assert p.power.idle_w > 0 and p.power.per_core_w > 0
    assert p.memory.budget_mb <= p.memory.total_mb
    if p.target.num_cores:
        assert p.target.num_cores <= p.cpu.cores


@pytest.mark.parametrize("name", sorted(FACTS))
def test_new_board_facts(name: str) -> None:
    arch, cores, mcpu, prefix = FACTS[name]
    p = load_profile(name)
    assert (p.arch, p.cpu.cores, p.target.mcpu, p.toolchain.prefix) == (arch, cores, mcpu, prefix)
    assert p.transport.kind == "ssh" and p.cpu.max_mhz


def test_riscv_vector_boards_declare_vectors() -> None:
    assert "+v" in load_profile("bpi-f3").target.mattr
    assert load_profile("bpi-f3").cpu.simd_width_bytes == 32  # VLEN 256
    assert "+v" not in load_profile("visionfive2").target.mattr  # the U74 has no vector unit


def test_tvm_llvm_knows_every_cpu() -> None:
    from tvm.target import codegen

    for name in REQUIRED:
        p = load_profile(name)
        assert codegen.llvm_is_valid_cpu(p.target.mcpu, p.target.mtriple), (name, p.target.mcpu)


def test_bad_profile_field_is_named(tmp_path: Path) -> None:
    src = Path(load_profile.__code__.co_filename).resolve().parent.parent / "profiles" / "rpi5.toml"
    bad = tmp_path / "bad.toml"
    bad.write_text(src.read_text().replace("cores = 4", "cores = 0"))
    with pytest.raises(
        ConfigError, match=r"bad.toml: .*cpu.cores: Input should be greater than or equal to 1"
    ):
        load_profile(str(bad))


def test_profiles_load_without_harness_and_raise_harness_config_error(tmp_path: Path) -> None:
    """profiles sit below harness: loading one imports nothing of harness, yet a bad one is the
    `ConfigError` every `except ConfigError`/`except HiltError` in harness (and the CLI) catches."""
    import subprocess
    import sys

    from harness.errors import HiltError

    probe = (
        "import sys, profiles.schema as s; s.load_profile('local');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'harness'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    bad = tmp_path / "bad.toml"
    bad.write_text("version = 1\n")
    with pytest.raises(ConfigError, match="arch: Field required") as info:
        load_profile(str(bad))
    assert isinstance(info.value, HiltError)
