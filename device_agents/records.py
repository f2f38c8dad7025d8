"""Measurement record: what one benchmark of one artifact on one board produced, versioned JSON.

All latency samples are kept; the summary (median, p90, p99, CV) is derived from them so it can
never disagree with the samples.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field, model_validator

from device_agents.agent import power
from harness.errors import ConfigError
from harness.versions import package_version

RECORD_VERSION = 1
# the names the agent's power readers give (one per reader module), plus "model" and "none"
EnergySource = Literal[power.SOURCES]  # type: ignore[valid-type]


class Energy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: EnergySource
    sensor: str = ""
    samples: int = 0
    idle_w: float | None = None
    mean_w: float | None = None
    total_j_per_inference: float | None = None
    active_j_per_inference: float | None = None
    note: str = ""

    @property
    def measured(self) -> bool:
        """A sensor's figure; a modelled one is an estimate and is never a regression."""
        return self.source not in ("model", "none")

    @property
    def per_inference_j(self) -> float | None:
        """Energy per inference: the active figure when the agent has one, else the total."""
        return self.active_j_per_inference or self.total_j_per_inference


class BoardFacts(BaseModel):
    """Governor, frequency and temperatures at one moment (before or after the run)."""

    governors: dict[str, str | None] = Field(default_factory=dict)
    freqs_khz: dict[str, dict[str, int | None]] = Field(default_factory=dict)
    temps_c: dict[str, float] = Field(default_factory=dict)


def percentile(sorted_values: list[int], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of already sorted values."""
    if not sorted_values:
        raise ValueError("no samples")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class LatencySummary(BaseModel):
    n: int
    mean_ns: float
    median_ns: float
    p90_ns: float
    p99_ns: float
    min_ns: int
    max_ns: int
    cv: float  # standard deviation / mean

    @classmethod
    def of(cls, samples: list[int]) -> LatencySummary:
        s = sorted(samples)
        mean = sum(s) / len(s)
        var = sum((x - mean) ** 2 for x in s) / (len(s) - 1) if len(s) > 1 else 0.0
        return cls(
            n=len(s),
            mean_ns=mean,
            median_ns=percentile(s, 50),
            p90_ns=percentile(s, 90),
            p99_ns=percentile(s, 99),
            min_ns=s[0],
            max_ns=s[-1],
            cv=math.sqrt(var) / mean if mean else 0.0,
        )


class _Derives(BaseModel):
    """A record whose computed fields are written out with it and recomputed when it is read back."""

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data


class Generation(_Derives):
    """Greedy generation of a causal LM (`hilt-runner --generate`): what an LLM user asks first."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int
    new_tokens: int
    ttft_ns: list[int] = Field(min_length=1)  # time to first token, one per measured generation
    decode_ns: list[int] = Field(default_factory=list)  # every decode step of every measured generation
    generated_ids: list[int] = Field(min_length=1)  # of the last generation

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode(self) -> LatencySummary | None:
        return LatencySummary.of(self.decode_ns) if self.decode_ns else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_tokens_per_s(self) -> float | None:
        """Decode throughput at the median per-token latency."""
        return 1e9 / self.decode.median_ns if self.decode and self.decode.median_ns > 0 else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ttft_median_ns(self) -> float:
        return percentile(sorted(self.ttft_ns), 50)


class LineQuality(BaseModel):
    """How the line to the board behaved during the measurement (framed transports: serial).

    Counted by the host's transport (`device_agents.transports.base.LineStats`); `agent` holds the
    agent's own frame-reader counters since it started (frames, crc_errors, resyncs, stale_drops)."""

    model_config = ConfigDict(extra="forbid")

    frames_sent: int = 0
    frames_failed: int = 0  # sent, never answered: damaged or lost either way
    crc_errors: int = 0  # answers that failed CRC at the host
    resyncs: int = 0
    retries: int = 0
    replays: int = 0  # answers the agent re-sent from its reply cache instead of running again
    bytes_sent: int = 0
    upload_bytes: int = 0
    upload_s: float = 0.0
    upload_wire_bytes: int = 0  # upload chunk frames on the line (compressed; resends included)
    compressed_chunks: int = 0
    bad_chunks: int = 0  # compressed chunks the agent could not decode and the host sent again
    goodput_bps: float | None = None  # acknowledged upload bytes per second
    wire_ratio: float | None = None  # upload_wire_bytes / upload_bytes: below 1, compression paid
    frame_error_rate: float = 0.0
    agent: dict[str, int] = Field(default_factory=dict)


_GENERATION_KEYS = ("prompt_tokens", "new_tokens", "ttft_ns", "decode_ns", "generated_ids")


class MeasurementRecord(_Derives):
    model_config = ConfigDict(extra="forbid")

    version: int = RECORD_VERSION
    board: str
    profile: str
    transport: str
    artifact: str  # bundle hash, or "selftest"
    runtime: str  # runtime tree hash
    samples_ns: list[int] = Field(min_length=1)
    warmup: int
    threads: int
    cores: list[int] = Field(default_factory=list)
    peak_rss_kb: int
    output_checksum: float | None = None
    output_shape: list[int] = Field(default_factory=list)
    energy: Energy
    facts_before: BoardFacts
    facts_after: BoardFacts
    throttled: bool
    throttle_reasons: list[str] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime
    runner_version: str
    tvm_version: str
    agent_version: str
    protocol: int
    hilt_version: str
    board_facts: dict[str, Any] = Field(default_factory=dict)  # from hello: arch, cpu, memory, os
    emulated: bool = False  # measured on an emulated board (qemu): emulation time, not board time
    simulated: bool = False  # a simulated board's latency model (device_agents.simfarm), not a measurement
    machine: str = ""  # the physical machine the board pool leased for this measurement
    pool_wait_s: float = 0.0  # how long the measurement waited for that machine
    line: LineQuality | None = None  # serial: frames, CRC failures, retries, goodput (None: pipes, SSH)
    generation: Generation | None = None  # causal LMs benched with --generate; samples_ns: whole runs
    weights: str = "fp32"  # the bundle's weight format (fp32 / int8 / int4; records before it: fp32)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def summary(self) -> LatencySummary:
        return LatencySummary.of(self.samples_ns)

    @classmethod
    def from_agent(
        cls, result: dict[str, Any], *, board: str, profile: str, transport: str, artifact: str, runtime: str,
        hello: dict[str, Any],
    ) -> MeasurementRecord:  # fmt: skip
        """Build a record from a `bench` answer and the board's `hello`."""
        runner = result["runner"]
        facts = {
            k: hello.get(k) for k in ("arch", "cpu_model", "cpu_count", "memory_mb", "os", "kernel", "python")
        }
        return cls(
            board=board,
            profile=profile,
            transport=transport,
            artifact=artifact,
            runtime=runtime,
            samples_ns=runner["samples_ns"],
            warmup=runner.get("warmup", 0),
            threads=runner.get("threads", 1),
            cores=result.get("cores") or [],
            peak_rss_kb=runner.get("peak_rss_kb", 0),
            output_checksum=runner.get("output_checksum"),
            output_shape=runner.get("output_shape") or [],
            energy=Energy.model_validate(result["energy"]),
            facts_before=BoardFacts.model_validate(result["facts_before"]),
            facts_after=BoardFacts.model_validate(result["facts_after"]),
            throttled=result["throttled"],
            throttle_reasons=result.get("throttle_reasons") or [],
            started_at=datetime.fromtimestamp(result["started_at"], UTC),
            finished_at=datetime.fromtimestamp(result["finished_at"], UTC),
            runner_version=str(runner.get("runner_version", "unknown")),
            tvm_version=str(runner.get("tvm_version", "unknown")),
            agent_version=str(hello.get("agent_version", "unknown")),
            simulated=bool(hello.get("simulated", False)),
            protocol=int(hello.get("protocol", 0)),
            hilt_version=package_version("hilt"),
            board_facts=facts,
            generation=Generation.model_validate({k: runner[k] for k in _GENERATION_KEYS})
            if runner.get("mode") == "generate"
            else None,
        )

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def save(self, path: Path | str) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path


def load_record(path: Path | str) -> MeasurementRecord:
    """Read a record; a malformed file is one clear error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read measurement record ({exc})") from None
    if isinstance(data, dict):
        if data.get("version") != RECORD_VERSION:
            raise ConfigError(
                f"{path}: measurement record version {data.get('version')} (expected {RECORD_VERSION})"
            )
    try:
        return MeasurementRecord.model_validate(data)
    except ValidationError as exc:
        bad = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(f"{path}: not a valid measurement record ({bad})") from None
