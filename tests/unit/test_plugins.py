"""Plug-ins are found, not listed: criteria come from their own modules, and a study's criterion
choices are fixed when it is created, so adding a criterion never breaks a resume."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import optuna

import harness.prune.criteria as criteria_pkg
from harness.prune.criteria import CRITERIA, DEFAULT_CRITERION, REGISTRY, SEARCHABLE, needs
from tuner import space as space_mod


def test_every_criterion_module_is_registered_and_the_lists_derive_from_them() -> None:
    modules = {m.name for m in pkgutil.iter_modules(criteria_pkg.__path__)} - {"base", "calibration"}
    assert modules == set(REGISTRY)
    for g, names in CRITERIA.items():
        assert names[0] == DEFAULT_CRITERION[g] and all(g in REGISTRY[n].scores for n in names)
        assert "random" in names and "random" not in SEARCHABLE[g]
    assert needs(["taylor"]) == (True, False) and needs(["output_norm", "wanda"]) == (False, True)


def test_a_study_keeps_the_criterion_choices_it_was_created_with(tmp_path: Path, monkeypatch) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    first = space_mod.study_criteria(study)
    assert first == dict(SEARCHABLE)
    grown = {**SEARCHABLE, "head": (*SEARCHABLE["head"], "new_one")}
    monkeypatch.setattr(space_mod, "SEARCHABLE", grown)  # a criterion installed after creation
    assert space_mod.study_criteria(optuna.load_study(study_name="s", storage=storage)) == first


def test_an_older_study_without_the_record_reads_its_choices_from_its_trials(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'old.db'}"
    study = optuna.create_study(study_name="old", storage=storage)
    old_choices = ["taylor", "output_norm", "flap"]  # the order studies used before plug-ins
    study.optimize(lambda t: float(len(t.suggest_categorical("s0_head_criterion", old_choices))), n_trials=1)
    assert space_mod.study_criteria(study)["head"] == tuple(old_choices)


def test_model_families_come_from_the_adapter_modules() -> None:
    import harness.models.adapters as adapters_pkg
    from harness.models.adapters import FAMILIES
    from harness.models.families import SUPPORTED_FAMILIES, model_class

    modules = {m.name for m in pkgutil.iter_modules(adapters_pkg.__path__)} - {"base"}
    assert {spec.name for spec in FAMILIES.values()} == modules
    assert SUPPORTED_FAMILIES == ("gemma3_text", "gpt2", "llama", "qwen2", "mistral")
    assert model_class("gemma3_text", "causal-lm").__name__ == "Gemma3ForCausalLM"
    assert model_class("qwen2", "causal-lm").__name__ == "Qwen2ForCausalLM"
    assert model_class("gpt2", "sequence-classification").__name__ == "GPT2ForSequenceClassification"


def test_transports_come_from_their_modules_and_an_unknown_kind_is_refused() -> None:
    import pytest

    import device_agents.transports as transports_pkg
    from device_agents.inventory import parse_farm
    from device_agents.transports import SPECS
    from harness.errors import ConfigError

    modules = {m.name for m in pkgutil.iter_modules(transports_pkg.__path__)} - {"base", "spec"}
    assert set(SPECS) == modules == {"local", "ssh", "serial"}
    farm = {"version": 1, "board": [{"name": "x", "profile": "local", "transport": {"kind": "usb"}}]}
    with pytest.raises(
        ConfigError, match=r"board\[0\] 'x': transport: unknown transport kind 'usb' \(known: "
    ):
        parse_farm(farm, "<farm>")
