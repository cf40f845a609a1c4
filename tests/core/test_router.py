"""The router pins the decision record's numbers: task types, length bands, signals, cap, bands."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from core.config_loading import ConfigError
from core.models.catalog import Catalog, load_catalog
from core.models.estimator import GIB
from core.router import (
    HardwareState,
    Router,
    RouterConfig,
    RoutingDecision,
    load_router_config,
    route,
)

CARD = 16 * GIB
IDLE = HardwareState(CARD - 600 * 1024**2, CARD, 41.5, "simulated rtx4090-laptop at idle")
QWEN = ("qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507", "qwen3-8b", "qwen3-14b",
        "qwen3-30b-a3b-instruct-2507")


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog(models_dir=tmp_path / "models")


@pytest.fixture
def config(catalog: Catalog) -> RouterConfig:
    return load_router_config(catalog)


def put_on_disk(catalog: Catalog, *ids: str) -> None:
    """A model directory with a config.json is what the catalog calls on disk."""
    for model_id in ids:
        directory = catalog.local_path(catalog.get(model_id))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text('{"model_type": "qwen3"}')


def score(router: Router, text: str, task_type: str = "simple_extraction") -> float:
    return router.analyzer.analyze(text, task_type).score


# --- complexity ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("task_type", "expected"), [
    ("simple_extraction", 0.1), ("standard_parsing", 0.3), ("salary_analysis", 0.5),
    ("complex_reasoning", 0.7), ("multi_step_analysis", 0.8), ("edge_case_handling", 0.9),
])
def test_task_type_table(config: RouterConfig, catalog: Catalog, task_type: str,
                         expected: float) -> None:
    result = Router(config, catalog).analyzer.analyze("short text", task_type)
    assert result.score == expected
    assert result.task_type_known
    assert [(f.name, f.contribution) for f in result.factors] == [("task_type", expected)]


def test_unknown_task_type_scores_default_and_says_so(config: RouterConfig,
                                                      catalog: Catalog) -> None:
    decision = Router(config, catalog).route("text", "poetry", IDLE)
    assert decision.score == 0.4
    assert not decision.complexity.task_type_known
    text = decision.explain()
    assert "unknown task type 'poetry'" in text
    assert "0.4" in text


@pytest.mark.parametrize(("chars", "added"), [
    (0, 0.0), (5_000, 0.0), (5_001, 0.1), (20_000, 0.1), (20_001, 0.2), (50_000, 0.2),
    (50_001, 0.3), (200_000, 0.3),
])
def test_length_bands_highest_only(config: RouterConfig, catalog: Catalog, chars: int,
                                   added: float) -> None:
    router = Router(config, catalog)
    assert score(router, "a" * chars) == pytest.approx(0.1 + added)


@pytest.mark.parametrize(("text", "added"), [
    ("equity", 0.2), ("Stock Options granted", 0.2), ("EQUITY and stock options", 0.2),
    ("stock  options", 0.0), ("remote", 0.0), ("hybrid", 0.0), ("Remote or HYBRID", 0.1),
    ("<table><table>", 0.0), ("<table><TABLE><table>", 0.2), ("no signals here", 0.0),
])
def test_content_signals(config: RouterConfig, catalog: Catalog, text: str, added: float) -> None:
    assert score(Router(config, catalog), text) == pytest.approx(0.1 + added)


def test_signals_add_up_and_cap_at_one(config: RouterConfig, catalog: Catalog) -> None:
    router = Router(config, catalog)
    text = "equity remote hybrid <table><table><table>" + "x" * 50_001
    result = router.analyzer.analyze(text, "edge_case_handling")
    assert result.raw_score == pytest.approx(0.9 + 0.3 + 0.2 + 0.1 + 0.2)
    assert result.score == 1.0
    assert result.capped
    assert result.factors[-1].name == "cap"
    assert sum(f.contribution for f in result.factors) == pytest.approx(1.0)
    # Just under the cap: no cap factor.
    uncapped = router.analyzer.analyze("equity", "multi_step_analysis")
    assert uncapped.score == 1.0
    assert not uncapped.capped


def test_every_weight_comes_from_config(catalog: Catalog, tmp_path: Path) -> None:
    user = {"complexity": {"task_types": {"simple_extraction": 0.05},
                           "length_bands": [{"over_chars": 10, "add": 0.5}],
                           "signals": [{"name": "pay", "any": ["salary"], "add": 0.25}],
                           "cap": 0.6}}
    config = load_router_config(catalog, user, tmp_path / "u.yaml")
    router = Router(config, catalog)
    assert score(router, "short") == 0.05
    assert score(router, "a" * 11) == pytest.approx(0.55)
    capped = router.analyzer.analyze("salary" * 2, "simple_extraction")
    assert capped.raw_score == pytest.approx(0.05 + 0.5 + 0.25)
    assert capped.score == 0.6
    assert score(router, "equity") == 0.05  # the shipped signals were replaced


def test_threshold_sums_compare_exactly(config: RouterConfig, catalog: Catalog) -> None:
    router = Router(config, catalog)
    s = score(router, "a" * 5_001, "standard_parsing")  # 0.3 + 0.1 is 0.4000000000000001 in floats
    assert s == 0.4
    _, _, _, preferred = router.preference(s, IDLE)
    assert preferred == ("qwen3-4b-instruct-2507",)  # 0.4 is not above the 0.4 threshold


# --- selection bands ----------------------------------------------------------------------------

def free(gib: float, temperature: float | None = 50.0) -> HardwareState:
    return HardwareState(int(gib * GIB), CARD, temperature)


THINKING, INSTRUCT = "qwen3-4b-thinking-2507", "qwen3-4b-instruct-2507"
B8, B14, B30 = "qwen3-8b", "qwen3-14b", "qwen3-30b-a3b-instruct-2507"


def record_select_optimal_model(task_complexity: float, available_vram: float,
                                temperature: float) -> str:
    """ADR-029's `select_optimal_model`, its branches copied as written; its "qwen3-8b-base" is
    the catalog's qwen3-8b, and an unknown temperature (None) is its default 0."""
    if temperature > 80:
        if task_complexity < 0.5:
            return "qwen3-4b-thinking-2507"
        else:
            return "qwen3-8b"
    if available_vram < 8:
        return "qwen3-4b-thinking-2507"
    elif available_vram < 10:
        return "qwen3-8b" if task_complexity < 0.7 else "qwen3-4b-thinking-2507"
    elif available_vram < 12:
        if task_complexity > 0.8:
            return "qwen3-14b"
        elif task_complexity > 0.4:
            return "qwen3-8b"
        else:
            return "qwen3-4b-instruct-2507"
    else:
        if task_complexity > 0.9 and available_vram > 14:
            return "qwen3-30b-a3b-instruct-2507"
        elif task_complexity > 0.7:
            return "qwen3-14b"
        elif task_complexity > 0.4:
            return "qwen3-8b"
        else:
            return "qwen3-4b-instruct-2507"


SCORES = (0.0, 0.39, 0.4, 0.41, 0.49, 0.5, 0.51, 0.69, 0.7, 0.71, 0.79, 0.8, 0.81, 0.89, 0.9,
          0.91, 1.0)
FREE_GIB = (0.5, 7.9, 7.99, 8.0, 8.01, 8.1, 9.9, 10.0, 10.1, 11.9, 12.0, 12.1, 13.9, 14.0, 14.01,
            14.1, 15.4)
TEMPERATURES = (None, 41.5, 79.9, 80.0, 80.01, 80.1, 95.0)


@pytest.fixture
def table_router(catalog: Catalog, tmp_path: Path) -> Router:
    """The shipped table, with one task type per score so `route` itself is asked for each score."""
    types = {f"c{s}": s for s in SCORES}
    return Router(load_router_config(catalog, {"complexity": {"task_types": types}},
                                     tmp_path / "u.yaml"), catalog)


def table_choice(router: Router, complexity: float, free_gib: float,
                 temperature: float | None) -> RoutingDecision:
    decision = router.route("", f"c{complexity}", free(free_gib, temperature))
    assert decision.score == complexity
    return decision


@pytest.mark.parametrize(("temperature", "free_gib", "complexity", "expected"), [
    # Above 80 C (strictly): complexity < 0.5 -> 4B thinking, else 8B, whatever the free memory.
    (80.1, 15.4, 0.0, THINKING), (80.1, 15.4, 0.49, THINKING), (80.1, 15.4, 0.5, B8),
    (80.1, 15.4, 0.51, B8), (80.1, 15.4, 1.0, B8), (80.01, 15.4, 0.49, THINKING),
    (95.0, 0.5, 0.49, THINKING), (95.0, 0.5, 0.5, B8), (95.0, 7.9, 1.0, B8),
    # Exactly 80 C is not hot: the memory bands decide.
    (80.0, 15.4, 0.4, INSTRUCT), (80.0, 15.4, 0.49, B8), (80.0, 15.4, 1.0, B30),
    (79.9, 7.9, 0.5, THINKING), (None, 15.4, 1.0, B30),
    # Free < 8 GiB: the 4B thinking model at every complexity.
    (50.0, 0.5, 0.0, THINKING), (50.0, 7.9, 0.69, THINKING), (50.0, 7.99, 1.0, THINKING),
    # 8 <= free < 10: 8B below 0.7, else the 4B thinking model.
    (50.0, 8.0, 0.0, B8), (50.0, 8.0, 0.69, B8), (50.0, 8.0, 0.7, THINKING),
    (50.0, 8.01, 0.71, THINKING), (50.0, 9.9, 0.69, B8), (50.0, 9.9, 0.7, THINKING),
    (50.0, 9.9, 1.0, THINKING),
    # 10 <= free < 12: 14B above 0.8, 8B above 0.4, else the 4B instruct.
    (50.0, 10.0, 0.39, INSTRUCT), (50.0, 10.0, 0.4, INSTRUCT), (50.0, 10.0, 0.41, B8),
    (50.0, 10.0, 0.7, B8), (50.0, 10.0, 0.8, B8), (50.0, 10.0, 0.81, B14),
    (50.0, 11.9, 0.4, INSTRUCT), (50.0, 11.9, 0.41, B8), (50.0, 11.9, 0.8, B8),
    (50.0, 11.9, 0.81, B14), (50.0, 11.9, 1.0, B14),
    # free >= 12: 30B above 0.9 with more than 14 GiB free, 14B above 0.7, 8B above 0.4, 4B.
    (50.0, 12.0, 0.4, INSTRUCT), (50.0, 12.0, 0.41, B8), (50.0, 12.0, 0.7, B8),
    (50.0, 12.0, 0.71, B14), (50.0, 12.0, 0.9, B14), (50.0, 12.0, 0.91, B14),
    (50.0, 12.0, 1.0, B14), (50.0, 14.0, 0.91, B14), (50.0, 14.0, 1.0, B14),
    (50.0, 14.01, 0.9, B14), (50.0, 14.01, 0.91, B30), (50.0, 14.1, 1.0, B30),
    (50.0, 15.4, 0.9, B14), (50.0, 15.4, 0.91, B30), (50.0, 15.4, 0.39, INSTRUCT),
    (50.0, 15.4, 0.4, INSTRUCT), (50.0, 15.4, 0.41, B8),
])
def test_router_table_cells(table_router: Router, temperature: float | None, free_gib: float,
                            complexity: float, expected: str) -> None:
    decision = table_choice(table_router, complexity, free_gib, temperature)
    assert decision.candidates[0] == expected
    assert decision.hot is (temperature is not None and temperature > 80)
    assert f"prefer {expected}" in decision.rule


def test_router_table_is_the_records_function_everywhere(table_router: Router) -> None:
    """Every combination of the values at and around each threshold, against the record's code."""
    for temperature in TEMPERATURES:
        for free_gib in FREE_GIB:
            for complexity in SCORES:
                decision = table_choice(table_router, complexity, free_gib, temperature)
                expected = record_select_optimal_model(complexity, free_gib, temperature or 0)
                assert decision.candidates[0] == expected, (temperature, free_gib, complexity)


def test_hot_band_text(table_router: Router) -> None:
    decision = table_choice(table_router, 0.49, 15.4, 85.0)
    assert decision.band == "hot: 85 C > 80 C"
    assert decision.rule == ("complexity 0.49; rule: complexity < 0.5 -> prefer "
                             "qwen3-4b-thinking-2507")
    cool = table_choice(table_router, 1.0, 14.1, 80.0)
    assert cool.band == "free 14.10 GiB >= 12 GiB"
    assert cool.rule == ("complexity 1.00; rule: complexity > 0.9 and free > 14 GiB -> prefer "
                         "qwen3-30b-a3b-instruct-2507")
    low = table_choice(table_router, 0.4, 11.9, 80.0)
    assert low.band == "free 11.90 GiB < 12 GiB"
    assert low.rule == ("complexity 0.40; rule: no rule above it applies -> prefer "
                        "qwen3-4b-instruct-2507")


def test_the_table_is_data_a_user_can_change(catalog: Catalog, tmp_path: Path) -> None:
    user = {"selection": {"hot": {"above_temperature_c": 70},
                          "vram_bands": [
                              {"below_gib": 6, "rules": [{"prefer": ["qwen3-4b-thinking-2507"]}]},
                              {"rules": [{"above_complexity": 0.5, "above_free_gib": 9,
                                          "prefer": ["qwen3-14b"]},
                                         {"below_complexity": 0.2, "prefer": ["qwen3-8b"]},
                                         {"prefer": ["qwen3-4b-instruct-2507"]}]}]}}
    router = Router(load_router_config(catalog, user, tmp_path / "u.yaml"), catalog)
    assert router.preference(0.1, free(5.9))[3] == (THINKING,)
    assert router.preference(0.51, free(9.01))[3] == (B14,)
    assert router.preference(0.51, free(9.0))[3] == (INSTRUCT,)  # free not above 9
    assert router.preference(0.5, free(15))[3] == (INSTRUCT,)  # complexity not above 0.5
    assert router.preference(0.19, free(15))[3] == (B8,)
    hot, _, _, preferred = router.preference(0.1, free(15, 70.5))
    assert hot
    assert preferred == (THINKING,)  # the shipped hot rules, under the user's temperature


def test_candidates_cascade_down_then_local_then_remote(config: RouterConfig,
                                                        catalog: Catalog) -> None:
    router = Router(config, catalog)
    assert router.candidates(("qwen3-14b",)) == (
        "qwen3-14b", "qwen3-8b", THINKING, INSTRUCT, "demo-small", "demo-tiny-a", "demo-tiny-b")
    # The record's fallback order after the 8B: the 4B thinking model, then the 4B instruct.
    assert router.candidates((B8,)) == (B8, THINKING, INSTRUCT, "demo-small", "demo-tiny-a",
                                        "demo-tiny-b")
    assert router.candidates((THINKING,)) == (THINKING, INSTRUCT, "demo-small", "demo-tiny-a",
                                              "demo-tiny-b")
    assert router.candidates((INSTRUCT,)) == (INSTRUCT, "demo-small", "demo-tiny-a",
                                              "demo-tiny-b")
    decision = router.route("x", "simple_extraction", IDLE)
    assert decision.candidates[-1] == "remote"


# --- choosing among what fits and is on disk ----------------------------------------------------

def test_chooses_preferred_model_when_on_disk_and_fitting(config: RouterConfig,
                                                          catalog: Catalog) -> None:
    put_on_disk(catalog, *QWEN, "demo-tiny-a")
    decision = Router(config, catalog).route("equity " + "a" * 6000, "salary_analysis", IDLE)
    assert decision.score == pytest.approx(0.8)  # 0.5 + 0.1 length + 0.2 equity
    assert decision.model_id == "qwen3-14b"
    assert decision.rejected == ()
    assert decision.estimate is not None
    assert decision.estimate.fits
    assert decision.estimate.gpu_memory_utilization is not None
    assert 1024 <= decision.estimate.context_tokens <= 32_768


def test_30b_never_chosen_on_16gb(config: RouterConfig, catalog: Catalog) -> None:
    put_on_disk(catalog, *QWEN)
    # 0.9 + 0.2 for equity, capped at 1.0: above 0.9 with more than 14 GiB free, the table says 30B.
    decision = Router(config, catalog).route("equity", "edge_case_handling", IDLE)
    assert decision.candidates[0] == "qwen3-30b-a3b-instruct-2507"
    assert decision.model_id == "qwen3-14b"
    [rejection] = decision.rejected
    assert rejection.model_id == "qwen3-30b-a3b-instruct-2507"
    assert rejection.kind == "does_not_fit"
    assert "alone exceed" in rejection.reason
    assert ("note: the table's choice qwen3-30b-a3b-instruct-2507 is not usable (the weights"
            in decision.explain())
    assert "qwen3-14b comes from the cascade after the table's choice" in decision.explain()


def test_cpu_machine_picks_the_demo_model(config: RouterConfig, catalog: Catalog) -> None:
    put_on_disk(catalog, "demo-tiny-a", "demo-tiny-b")
    host = HardwareState(20 * GIB, 23 * GIB, None, "host RAM (CPU engine)")
    decision = Router(config, catalog).route("x", "complex_reasoning", host)
    assert decision.model_id == "demo-tiny-a"
    assert decision.score == 0.7  # >= 12 GiB free, not above 0.7: the 8B, then down the cascade
    assert [(r.model_id, r.kind) for r in decision.rejected] == [
        ("qwen3-8b", "not_on_disk"), ("qwen3-4b-thinking-2507", "not_on_disk"),
        ("qwen3-4b-instruct-2507", "not_on_disk"), ("demo-small", "not_on_disk")]
    text = decision.explain()
    assert "temperature unknown" in text
    assert "not on disk" in text
    assert "chosen demo-tiny-a" in text
    assert ("note: the table's choice qwen3-8b is not usable (not on disk (no config.json in "
            in text)
    assert "demo-tiny-a comes from the local tier (models built on this machine)" in text


def test_too_little_memory_moves_down(config: RouterConfig, catalog: Catalog) -> None:
    put_on_disk(catalog, *QWEN)
    # 10.5 GiB free, complexity 0.9 -> the table says 14B, which needs ~10.5 GiB beside the
    # 1 GiB buffer: the next in the cascade, the 8B, fits.
    decision = Router(config, catalog).route("x", "edge_case_handling", free(10.5))
    assert decision.candidates[0] == "qwen3-14b"
    assert decision.model_id == "qwen3-8b"
    assert [(r.model_id, r.kind) for r in decision.rejected] == [("qwen3-14b", "does_not_fit")]


def test_gguf_entry_rejected_for_engine(tmp_path: Path) -> None:
    """The thinking model pointed at the record's Q5_K_M GGUF is listed, never loaded."""
    gguf = {"qwen3-4b-thinking-2507": {"quantization": "q5_k_m", "engine": "llama.cpp"}}
    catalog = load_catalog(gguf, tmp_path / "u.yaml", models_dir=tmp_path / "models")
    config = load_router_config(catalog)
    put_on_disk(catalog, "demo-tiny-a")
    decision = Router(config, catalog).route("x", "simple_extraction", free(15, 90))
    assert decision.hot
    assert decision.model_id == "demo-tiny-a"
    first = decision.rejected[0]
    assert first.model_id == "qwen3-4b-thinking-2507"
    assert first.kind == "engine"
    assert "llama.cpp" in first.reason


def test_private_task_never_goes_remote(config: RouterConfig, catalog: Catalog) -> None:
    remote = catalog.get("remote").model_copy(update={
        "enabled": True, "base_url": "http://gpu-box:8000/v1", "remote_model": "qwen3-14b"})
    with_remote = catalog.with_entry(remote)
    router = Router(config, with_remote)
    assert router.route("x", "simple_extraction", IDLE).model_id == "remote"
    private = router.route("x", "simple_extraction", IDLE, private=True)
    assert private.model_id is None
    assert private.rejected[-1].kind == "private"
    assert "manager's fallback cascade" in private.explain()


def test_nothing_usable_gives_none(config: RouterConfig, catalog: Catalog) -> None:
    decision = Router(config, catalog).route("x", "simple_extraction", IDLE)
    assert decision.model_id is None
    assert decision.rejected[-1].kind == "remote_off"
    assert {r.model_id for r in decision.rejected} == set(decision.candidates)


def test_decision_is_frozen_and_serialisable(config: RouterConfig, catalog: Catalog) -> None:
    decision = route("equity", "salary_analysis", IDLE, catalog, config=config)
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.model_id = "qwen3-8b"  # type: ignore[misc]
    data: dict[str, Any] = decision.as_dict()
    assert data["complexity"] == 0.7
    assert data["factors"][1] == {"name": "signal:equity", "contribution": 0.2,
                                  "detail": '"equity" or "stock options"'}
    assert data["hardware"]["temperature_c"] == 41.5
    assert decision.factors == (("task_type", 0.5), ("signal:equity", 0.2))


def test_explanation_lists_factors_hardware_and_rule(config: RouterConfig,
                                                     catalog: Catalog) -> None:
    put_on_disk(catalog, *QWEN)
    text = Router(config, catalog).route("equity " * 1000, "salary_analysis", IDLE).explain()
    for needle in ("Chosen model: qwen3-14b", "+0.50  task_type", "+0.10  length",
                   "+0.20  signal:equity", "41.5 C", "15.41 GiB free",
                   "selection: free 15.41 GiB >= 12 GiB; complexity 0.80; "
                   "rule: complexity > 0.7 -> prefer qwen3-14b", "gpu_memory_utilization"):
        assert needle in text, needle


# --- configuration checks -----------------------------------------------------------------------

def test_router_naming_a_missing_model_is_a_config_error(catalog: Catalog,
                                                         tmp_path: Path) -> None:
    user = {"selection": {"hot": {"rules": [{"prefer": ["qwen3-8b-base"]}]}}}
    with pytest.raises(ConfigError) as info:
        load_router_config(catalog, user, tmp_path / "u.yaml")
    assert info.value.path == str(tmp_path / "u.yaml")
    assert info.value.key == "router.selection.hot.rules.0.prefer.0"
    assert "qwen3-8b-base" in info.value.problem
    assert "qwen3-8b" in info.value.problem


def test_shipped_defaults_blamed_for_their_own_names(tmp_path: Path) -> None:
    import yaml

    from core.models.catalog import default_models_file

    data = yaml.safe_load(default_models_file().read_text())
    data["router"]["selection"]["local_tier"] = ["demo-tiny-z"]
    broken = tmp_path / "models.yaml"
    broken.write_text(yaml.safe_dump(data))
    catalog = load_catalog(defaults_path=broken, models_dir=tmp_path)
    with pytest.raises(ConfigError) as info:
        load_router_config(catalog, {"selection": {"min_context_tokens": 2048}},
                           tmp_path / "u.yaml", defaults_path=broken)
    assert info.value.path == str(broken)
    assert info.value.key == "router.selection.local_tier.0"


@pytest.mark.parametrize(("user", "key"), [
    ({"complexity": {"signals": [{"name": "x", "any": ["a"], "all": ["b"], "add": 0.1}]}},
     "router.complexity.signals.0"),
    ({"selection": {"vram_bands": [{"below_gib": 8, "rules": [{"prefer": ["qwen3-8b"]}]}]}},
     "router.selection"),
    ({"selection": {"vram_bands": [{"rules": [{"below_complexity": 0.5,
                                               "prefer": ["qwen3-8b"]}]}]}},
     "router.selection.vram_bands.0"),
    ({"selection": {"vram_bands": [{"rules": [{"prefer": ["qwen3-8b"]},
                                              {"prefer": ["qwen3-14b"]}]}]}},
     "router.selection.vram_bands.0"),
    ({"selection": {"hot": {"rules": [{"above_complexity": 0.5, "prefer": ["qwen3-8b"]}]}}},
     "router.selection.hot"),
    ({"selection": {"hot": {"rules": [{"above_temperature_c": 90, "prefer": ["qwen3-8b"]}]}}},
     "router.selection.hot.rules.0.above_temperature_c"),
    ({"selection": {"vram_bands": [{"rules": [{"above_free_gib": -1, "prefer": ["qwen3-8b"]},
                                              {"prefer": ["qwen3-14b"]}]}]}},
     "router.selection.vram_bands.0.rules.0.above_free_gib"),
    ({"selection": {"remote_first": True}}, "router.selection.remote_first"),
    # One setting with the manager's now (model_switching.fallback_cascade, .vram_buffer_gb):
    # load_app_config reads them there; the router's own section refuses them.
    ({"selection": {"cascade": ["qwen3-8b"]}}, "router.selection.cascade"),
    ({"selection": {"buffer_gib": 2}}, "router.selection.buffer_gib"),
])
def test_bad_router_config(catalog: Catalog, tmp_path: Path, user: dict[str, Any],
                           key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_router_config(catalog, user, tmp_path / "u.yaml")
    assert info.value.key == key
    assert info.value.path == str(tmp_path / "u.yaml")


def test_decision_on_50k_chars_is_fast(config: RouterConfig, catalog: Catalog) -> None:
    """A loose guard (10x the 100 us target); tests/benchmarks/bench_router.py measures it."""
    put_on_disk(catalog, "demo-tiny-a")
    router = Router(config, catalog)
    text = ("Senior engineer, salary 120k, remote or hybrid. " * 1100)[:50_000]
    router.route(text, "salary_analysis", IDLE)
    runs = []
    for _ in range(50):
        start = time.perf_counter()
        router.route(text, "salary_analysis", IDLE)
        runs.append(time.perf_counter() - start)
    assert sorted(runs)[len(runs) // 2] < 1e-3


def test_the_router_sees_a_catalog_changed_after_construction(
        config: RouterConfig, catalog: Catalog, tmp_path: Path) -> None:
    """The runtime hands the router a new catalog when a model is added or found on disk;
    nothing the router derived from the old one (directories, remote entries) may stay."""
    router = Router(config, catalog)
    assert router.route("x", "simple_extraction", IDLE).model_id is None  # nothing on disk
    elsewhere = tmp_path / "added" / "qwen3-4b"
    elsewhere.mkdir(parents=True)
    (elsewhere / "config.json").write_text('{"model_type": "qwen3"}')
    moved = catalog.get("qwen3-4b-instruct-2507").model_copy(update={"path": elsewhere})
    router.catalog = catalog.with_entry(moved)
    decision = router.route("x", "simple_extraction", IDLE)
    assert decision.model_id == "qwen3-4b-instruct-2507"
    # A remote endpoint enabled in the new catalog is offered too.
    remote = catalog.get("remote").model_copy(update={
        "enabled": True, "base_url": "http://gpu-box:8000/v1", "remote_model": "m"})
    router.catalog = catalog.with_entry(remote)
    assert router.route("x", "simple_extraction", IDLE).model_id == "remote"
