"""Run the SIA check on a model and data: structural verdict + empirical test per granularity, cached.

Results are cached by (model hash, granularity, criterion, data hash, settings), so the tuner can
ask for a granularity's predictable horizon on every trial and pay only the first time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from harness.cache import cache_root
from harness.errors import ConfigError
from harness.prune.calib import calibration_batches
from harness.prune.schedule import DEFAULT_CRITERION
from harness.sia.empirical import EmpiricalConfig, GranularityResult, rejudge, run_empirical
from harness.sia.probe import ModelProbe, chance_loss_of
from harness.sia.structural import StructuralVerdict, structural_verdict
from harness.sia.verdict import Thresholds

log = logging.getLogger(__name__)

REPORT_VERSION = 1
ALGORITHM_VERSION = 3  # bump when a metric's definition changes: cached results are then recomputed
GRANULARITIES = ("layer", "head", "channel")


@dataclass
class CalibrationSpec:
    """Which calibration batches the check runs on."""

    batches: int = 2
    batch_size: int = 32
    channel_groups: int = 4  # FFN channels are probed in this many random groups per layer
    seed: int = 0


@dataclass
class SIAReport:
    version: int
    model_hash: str
    data_hash: str
    structural: StructuralVerdict
    results: list[GranularityResult] = field(default_factory=list)
    thresholds: Thresholds = field(default_factory=Thresholds)
    config: EmpiricalConfig = field(default_factory=EmpiricalConfig)

    def horizon(self, granularity: str) -> float:
        for r in self.results:
            if r.granularity == granularity:
                return r.horizon_removed
        raise KeyError(granularity)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "model_hash": self.model_hash,
            "data_hash": self.data_hash,
            "structural": self.structural.to_dict(),
            "thresholds": self.thresholds.to_dict(),
            "config": self.config.to_dict(),
            "results": [r.to_dict() for r in self.results],
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        tmp.replace(path)


def model_hash(model: nn.Module) -> str:
    """sha256 over the config and every parameter/buffer (name, shape, bytes)."""
    h = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def data_hash(input_ids: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256(input_ids.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()


def _cache_dir() -> Path:
    return cache_root() / "sia"


def _cache_key(mh: str, dh: str, granularity: str, criterion: str, settings: dict) -> str:
    blob = json.dumps({"m": mh, "d": dh, "g": granularity, "c": criterion, "s": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def check_sia(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    *,
    granularities: tuple[str, ...] = GRANULARITIES,
    criteria: dict[str, str] | None = None,
    config: EmpiricalConfig | None = None,
    thresholds: Thresholds | None = None,
    calibration: CalibrationSpec | None = None,
    cache: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SIAReport:
    """Structural verdict plus the empirical test for each granularity (cached per granularity)."""
    config = config or EmpiricalConfig()
    thresholds = thresholds or Thresholds()
    calibration = calibration or CalibrationSpec()
    criteria = {**DEFAULT_CRITERION, **(criteria or {})}
    bad = [g for g in granularities if g not in GRANULARITIES]
    if bad:
        raise ConfigError(f"unknown granularity {bad[0]!r}; use one of: {', '.join(GRANULARITIES)}")
    model.eval()
    mh = model_hash(model)
    dh = data_hash(input_ids, labels)
    report = SIAReport(
        version=REPORT_VERSION,
        model_hash=mh,
        data_hash=dh,
        structural=structural_verdict(model),
        thresholds=thresholds,
        config=config,
    )
    batches = calibration_batches(
        input_ids, labels, calibration.batches, calibration.batch_size, calibration.seed
    )
    settings = {
        "algorithm": ALGORITHM_VERSION,
        "config": config.to_dict(),
        # no thresholds: a cached measurement is re-judged under the thresholds asked for now
        "calibration": vars(calibration),
    }
    for g in granularities:
        crit = criteria[g]
        path = _cache_dir() / f"{_cache_key(mh, dh, g, crit, settings)}.json"
        if cache and path.is_file():
            try:
                # verdicts are a function of the stored measurements: judge them with today's rules
                cached = GranularityResult.from_dict(json.loads(path.read_text()))
                if cached.chance_loss is None:  # entries written before it was stored
                    cached = replace(cached, chance_loss=chance_loss_of(model))
                report.results.append(rejudge(cached, thresholds))
                log.info("SIA %s/%s: cache hit %s", g, crit, path.name)
                continue
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("SIA cache entry %s is unreadable; recomputing", path)
        probe = ModelProbe(
            model,
            g,
            crit,
            batches,
            channel_groups=calibration.channel_groups,
            seed=calibration.seed,
            recovery_data=(input_ids, labels),
        )
        result = run_empirical(probe, config, thresholds, g, crit, progress)
        report.results.append(result)
        if cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(result.to_dict()))
            tmp.replace(path)
    return report


def predictable_horizon(
    model: nn.Module,
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    granularity: str,
    criterion: str | None = None,
    **kwargs: object,
) -> float:
    """Largest fraction of `granularity` units SIA lets a stage remove on this model (cached)."""
    crit = {granularity: criterion} if criterion else None
    report = check_sia(model, input_ids, labels, granularities=(granularity,), criteria=crit, **kwargs)  # type: ignore[arg-type]
    return report.horizon(granularity)
