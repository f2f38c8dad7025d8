"""Deployment report of a tuning study: self-contained HTML (inline SVG plots) plus a Markdown summary.

Everything comes from the study's database (Optuna trials, hilt's measurement records) and the
files the tuner persisted (stage logs, SIA reports). Emulated boards and modelled energy are
labelled wherever they appear, so no one mistakes emulation time for board time or a power model
for a measurement.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from jinja2 import Environment, FileSystemLoader, select_autoescape
from optuna.trial import FrozenTrial, TrialState

from device_agents.records import MeasurementRecord
from harness.errors import ConfigError
from harness.sia.empirical import GranularityResult
from harness.sia.plot import additivity_figure
from harness.sia.stats import Estimate
from harness.versions import stack_versions
from profiles.schema import load_profile
from tuner.results import DenseResult, TrialResult, quality_score
from tuner.stage_logs import TrialStageLog, read_stage_logs
from tuner.store import ResultsStore, resolve_url, stored_record
from tuner.study_info import SiaSpace, StudyInfo

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"


@dataclass
class ReportData:
    study: str
    storage: str
    model: str
    profile: str
    emulated: bool
    objectives: list[str]
    n_trials: dict[str, int]
    chosen: FrozenTrial
    pareto: list[FrozenTrial]
    feasible: list[FrozenTrial]
    dense: DenseResult | None
    record: MeasurementRecord
    dense_record: MeasurementRecord | None
    stage_logs: list[TrialStageLog]
    sia: list[GranularityResult]
    command: str
    versions: dict[str, str]
    deltas: dict[str, float] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # causal LMs: greedy text, dense and chosen
    sia_space: SiaSpace | None = None  # granularities the search pruned, and SIA's horizons

    @property
    def sia_space_line(self) -> str:
        """'The search pruned layer, head (SIA on the dense model: ...); channel not searched: ...'."""
        if self.sia_space is None:
            return ""
        space = self.sia_space
        line = (
            f"The search pruned {', '.join(space.granularities)} (SIA on the dense model: {space.describe()})"
        )
        if space.dropped:
            line += f"; {', '.join(space.dropped)} not searched: SIA is violated at every tested ratio"
        return line + "."

    @property
    def causal(self) -> bool:
        return self.result.perplexity is not None

    @property
    def energy_modelled(self) -> bool:
        return self.record.energy.source == "model"

    @property
    def result(self) -> TrialResult:
        """The chosen trial's results."""
        return TrialResult.from_user_attrs(self.chosen.user_attrs)


def _svg(fig) -> str:  # noqa: ANN001
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _plots(d: ReportData) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    axes = [
        ("latency_ms", "latency p50 (ms)"),
        ("peak_rss_mb", "peak memory (MB)"),
        ("energy_mj", "energy (mJ)"),
    ]
    fig, axs = plt.subplots(1, 3, figsize=(12, 3.6))
    feasible = [TrialResult.from_user_attrs(t.user_attrs) for t in d.feasible]
    pareto = [TrialResult.from_user_attrs(t.user_attrs) for t in d.pareto]
    if d.causal:
        axes[0] = ("decode_tokens_per_s", "decode tokens/s")
        axes[2] = ("ttft_ms", "time to first token (ms)")

    def y(r: DenseResult | TrialResult) -> float:
        return r.quality[1]

    for ax, (key, label) in zip(axs, axes, strict=True):
        ax.scatter([getattr(r, key) for r in feasible], [y(r) for r in feasible], s=16, c="#999",
                   label="feasible trials")  # fmt: skip
        ax.scatter([getattr(r, key) for r in pareto], [y(r) for r in pareto], s=28, c="#1f77b4",
                   label="Pareto front")  # fmt: skip
        ax.scatter([getattr(d.result, key)], [y(d.result)], s=140, marker="*", c="#d62728",
                   label=f"chosen (#{d.chosen.number})")  # fmt: skip
        if d.dense:
            ax.scatter([getattr(d.dense, key)], [y(d.dense)], s=50, marker="s", c="k", label="dense")
        suffix = " — estimate (power model)" if key == "energy_mj" and d.energy_modelled else ""
        ax.set_xlabel(label + suffix)
        ax.set_ylabel(d.result.quality[0])
        ax.legend(fontsize=7)
    fig.suptitle("Pareto front" + (" (emulated board: emulation time)" if d.emulated else ""))
    out["pareto"] = _svg(fig)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    series = [("chosen", d.record)] + ([("dense", d.dense_record)] if d.dense_record else [])
    ax.boxplot([[s / 1e6 for s in r.samples_ns] for _, r in series], orientation="horizontal",
               tick_labels=[f"{n} on {r.board}" for n, r in series])  # fmt: skip
    ax.set_xscale("log")  # outliers (a busy machine) would squash the bulk on a linear axis
    ax.set_xlabel("latency per inference (ms, log scale), all samples")
    ax.set_title("latency distribution" + (" — emulated board" if d.emulated else ""))
    out["latency"] = _svg(fig)
    if d.sia:
        out["sia"] = _svg(additivity_figure(d.sia, "SIA additivity on the model each stage pruned"))
    return out


def _pct(new: float, old: float) -> float:
    return (new / old - 1.0) * 100.0 if old else 0.0


def _existing_sqlite(url: str) -> None:
    """A report reads a results database; it must not create (or add tables to) an empty one."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url.removeprefix("sqlite:///"))
    if path.is_dir():
        raise ConfigError(f"results database {path} is a directory, not an SQLite file")
    if not path.is_file():
        raise ConfigError(f"results database {path} does not exist")
    try:
        with path.open("rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise ConfigError(f"cannot read results database {path}: {exc.strerror or exc}") from None
    if empty:
        raise ConfigError(f"results database {path} is empty: no study to report on")


def load_report_data(study_name: str, storage: str | None, trial: int | None = None) -> ReportData:
    from sqlalchemy.exc import DatabaseError

    url = resolve_url(storage)
    _existing_sqlite(url)
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        raise ConfigError(f"no study named '{study_name}' in {url}") from None
    except DatabaseError as exc:  # not a database, unreadable, locked
        raise ConfigError(f"cannot read results database {url}: {exc.orig or exc}") from None
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feasible = [t for t in done if all(c <= 0 for c in t.user_attrs.get("constraints", [1]))]
    if not feasible:
        raise ConfigError(f"study '{study_name}' has no completed feasible trial to report on")
    try:
        pareto = [t for t in study.best_trials if t in feasible] or feasible
    except ValueError:
        pareto = feasible
    if trial is not None:
        chosen = next((t for t in done if t.number == trial), None)
        if chosen is None:
            raise ConfigError(f"study '{study_name}' has no completed trial {trial}")
    else:
        chosen = max(pareto, key=lambda t: (quality_score(t.user_attrs), -t.user_attrs["latency_ms"]))
    store = ResultsStore(url)
    rows = store.measurements(study=study_name)
    record = next(stored_record(r) for r in rows if r["trial_number"] == chosen.number)
    info = StudyInfo.of(study)
    dense = info.dense
    dense_record = next((stored_record(r) for r in rows if r["trial_number"] is None), None)
    sia = store.sia_results(study_name)
    try:
        emulated = load_profile(info.profile).emulated
    except ConfigError:
        emulated = False
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState}
    data = ReportData(
        study=study_name, storage=url, model=info.model, profile=info.profile,
        emulated=emulated, objectives=info.objectives, n_trials=counts,
        chosen=chosen, pareto=pareto, feasible=feasible, dense=dense, record=record,
        dense_record=dense_record,
        stage_logs=read_stage_logs(chosen.user_attrs.get("stage_logs")), sia=sia,
        command=info.command, versions=stack_versions(), sia_space=info.sia_space,
    )  # fmt: skip
    a = data.result
    if dense:
        data.deltas = {
            "latency": _pct(a.latency_ms, dense.latency_ms),
            "memory": _pct(a.peak_rss_mb, dense.peak_rss_mb),
            "energy": _pct(a.energy_mj, dense.energy_mj) if dense.energy_mj else 0.0,
            "params": _pct(a.params, dense.params) if a.params and dense.params else 0.0,
        }
        if a.accuracy is not None and dense.accuracy is not None:
            data.deltas["accuracy_pp"] = (a.accuracy - dense.accuracy) * 100.0
        if a.perplexity is not None and dense.perplexity is not None:
            data.deltas["perplexity"] = _pct(a.perplexity, dense.perplexity)
            data.deltas["ttft"] = _pct(a.ttft_ms or 0.0, dense.ttft_ms or 0.0)
            data.deltas["decode"] = _pct(a.decode_tokens_per_s or 0.0, dense.decode_tokens_per_s or 0.0)
    if data.causal:
        data.samples = _samples(data.model, a, dense)
    return data


def _samples(model_dir: str, chosen: TrialResult, dense: DenseResult | None) -> dict[str, str]:
    """The greedy continuations the board generated, as text in the model's own tokenizer."""
    from harness.data.text import load_tokenizer

    results = (("dense", dense), ("chosen", chosen))
    pairs = [(name, r.generated_ids) for name, r in results if r is not None and r.generated_ids]
    try:
        tok = load_tokenizer(model_dir)
    except Exception as exc:  # noqa: BLE001 - a report without text samples is still a report
        log.warning("no tokenizer for %s (%s): the report shows token ids only", model_dir, exc)
        return {name: " ".join(map(str, ids)) for name, ids in pairs}
    return {name: tok.decode(ids) for name, ids in pairs}


def _estimate(e: Estimate | None) -> float | None:
    """An SIA statistic as the report prints it: 4 decimals, None where it is undefined."""
    return None if e is None else e.to_dict()["value"]


def headline(d: ReportData) -> str:
    """The paper-style line: '−67.2% latency, −62.5% memory' computed from this study."""
    if not d.deltas:
        return "no dense measurement in this study"
    x = d.deltas
    where = "emulated " if d.emulated else ""
    fmt = f", {d.record.weights} weights" if d.record.weights != "fp32" else ""  # hilt compile --weights
    if d.causal and "perplexity" in x:
        return (
            f"{x['decode']:+.1f}% decode tokens/s, {x['ttft']:+.1f}% time to first token, "
            f"{x['memory']:+.1f}% peak memory, {x['params']:+.1f}% parameters, "
            f"{x['perplexity']:+.1f}% perplexity vs dense on {where}board {d.record.board} ({d.profile}){fmt}"
        )
    energy = f", {x['energy']:+.1f}% energy" + (" (estimate, power model)" if d.energy_modelled else "")
    return (
        f"{x['latency']:+.1f}% latency, {x['memory']:+.1f}% peak memory{energy}, "
        f"{x['params']:+.1f}% parameters, "
        f"{x['accuracy_pp']:+.2f} pp accuracy vs dense on {where}board {d.record.board} ({d.profile}){fmt}"
    )


def write_report(d: ReportData, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "html.j2"]))
    env.filters["est"] = _estimate
    schedule = json.dumps(d.chosen.user_attrs.get("schedule", {}), indent=2)
    ctx = {"d": d, "plots": _plots(d), "headline": headline(d), "schedule_json": schedule,
           "a": d.result, "summary": d.record.summary}  # fmt: skip
    html = out_dir / "report.html"
    html.write_text(env.get_template("deploy.html.j2").render(**ctx))
    md = out_dir / "report.md"
    md.write_text(env.get_template("deploy.md.j2").render(**ctx))
    (out_dir / "schedule.json").write_text(schedule + "\n")
    return html, md
