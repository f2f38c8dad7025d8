"""Versions of hilt and the libraries whose behaviour its results depend on."""

from __future__ import annotations

from importlib import metadata


def package_version(name: str) -> str:
    """Installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def stack_versions() -> dict[str, str]:
    """The versions recorded in every artifact, measurement and report."""
    return {
        "hilt": package_version("hilt"),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "tvm": package_version("apache-tvm"),
        "tvm-ffi": package_version("apache-tvm-ffi"),
    }
