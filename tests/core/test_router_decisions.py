"""The router's decision in detail: each rejection kind, the minimum-context rule, where a fallback
comes from, what-if states, and the decision as `vrampilot route` prints it (explain, JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.models.catalog import Catalog, load_catalog
from core.models.estimator import GIB, Estimator, EstimatorSettings
from core.router import HardwareState, Router, load_router_config

CARD = 16 * GIB
MIB = 1024**2
THINKING, INSTRUCT = "qwen3-4b-thinking-2507", "qwen3-4b-instruct-2507"
B8, B14 = "qwen3-8b", "qwen3-14b"
LOCAL_TIER = ("demo-small", "demo-tiny-a", "demo-tiny-b")


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog(models_dir=tmp_path / "models")


def put_on_disk(catalog: Catalog, *ids: str) -> None:
    for model_id in ids:
        directory = catalog.local_path(catalog.get(model_id))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text('{"model_type": "qwen3"}')


@dataclass(frozen=True)
class Switching:
    """model_switching's two settings the router shares (the buffer and the cascade)."""

    vram_buffer_gb: float = 1.0
    fallback_cascade: tuple[str, ...] = ("qwen3-30b-a3b-instruct-2507", B14, B8, THINKING,
                                         INSTRUCT, "remote")  # as shipped


def router(catalog: Catalog, tmp_path: Path, user: dict[str, object] | None = None,
           switching: Switching | None = None) -> Router:
    return Router(load_router_config(catalog, user, tmp_path / "u.yaml", switching=switching),
                  catalog)


def test_a_disabled_model_is_rejected_and_the_next_one_taken(tmp_path: Path) -> None:
    catalog = load_catalog({"qwen3-8b": {"enabled": False}}, tmp_path / "c.yaml",
                           models_dir=tmp_path / "models")
    put_on_disk(catalog, B8, THINKING)
    decision = router(catalog, tmp_path).route("x", "salary_analysis",
                                               HardwareState(15 * GIB, CARD, 50.0))
    assert decision.candidates[0] == B8
    assert decision.model_id == THINKING
    [rejection] = decision.rejected
    assert (rejection.model_id, rejection.kind, rejection.reason) == (
        B8, "disabled", "disabled in the configuration")
    assert decision.notes == (
        f"the table's choice {B8} is not usable (disabled in the configuration); {THINKING} "
        "comes from the cascade after the table's choice",)


def test_an_engine_this_app_cannot_drive(catalog: Catalog, tmp_path: Path) -> None:
    put_on_disk(catalog, B8)
    only_remote = Router(load_router_config(catalog), catalog,
                         loadable_engines=frozenset({"remote", "sglang"}))
    decision = only_remote.route("x", "salary_analysis", HardwareState(15 * GIB, CARD, 50.0))
    first = decision.rejected[0]
    assert (first.model_id, first.kind) == (B8, "engine")
    assert first.reason == "AWQ weights need vllm; this app loads models with remote, sglang"
    assert decision.model_id is None


def test_the_minimum_context_rule(catalog: Catalog, tmp_path: Path) -> None:
    """A model whose weights fit but leave room for fewer than min_context_tokens is refused:
    loading it would give a context too short to use."""
    put_on_disk(catalog, "demo-tiny-a")
    r = router(catalog, tmp_path)
    fp = r.estimator.footprint(catalog.get("demo-tiny-a"))
    assert fp.kv_bytes_per_token == 512
    fixed = fp.weight_bytes + fp.overhead_bytes
    # A device where exactly 50 thousandths of total hold the fixed part plus 100 tokens.
    total = (fixed + 100 * 512) * 1000 // 50
    tight = HardwareState(GIB + (fixed + 100 * 512), total, None)
    decision = r.route("x", "simple_extraction", tight)
    rejection = next(x for x in decision.rejected if x.model_id == "demo-tiny-a")
    assert rejection.kind == "does_not_fit"
    assert rejection.reason == "only 100 tokens of context fit, fewer than 1024"
    # The rule's minimum is configurable: 100 tokens are enough when it asks for 100.
    lenient = router(catalog, tmp_path, {"selection": {"min_context_tokens": 100}})
    chosen = lenient.route("x", "simple_extraction", tight)
    assert chosen.model_id == "demo-tiny-a"
    assert chosen.estimate is not None
    assert chosen.estimate.context_tokens == 100
    strict = router(catalog, tmp_path, {"selection": {"min_context_tokens": 101}})
    assert strict.route("x", "simple_extraction", tight).model_id is None


def test_the_buffer_is_kept_back(catalog: Catalog, tmp_path: Path) -> None:
    put_on_disk(catalog, B8)
    r = router(catalog, tmp_path)
    fp = r.estimator.footprint(catalog.get(B8))
    need = fp.weight_bytes + fp.overhead_bytes + 1024 * fp.kv_bytes_per_token
    hw = HardwareState(need + GIB // 2 + 20 * MIB, CARD, 50.0)
    assert r.check(catalog.get(B8), hw, False).kind == "does_not_fit"  # type: ignore[union-attr]
    half = router(catalog, tmp_path, switching=Switching(vram_buffer_gb=0.5))
    assert half.check(catalog.get(B8), hw, False).fits  # type: ignore[union-attr]


def test_the_buffer_changes_live(catalog: Catalog, tmp_path: Path) -> None:
    """The settings dialog sets the buffer on the running router: its next checks keep the
    new amount back."""
    put_on_disk(catalog, B8)
    r = router(catalog, tmp_path)
    fp = r.estimator.footprint(catalog.get(B8))
    need = fp.weight_bytes + fp.overhead_bytes + 1024 * fp.kv_bytes_per_token
    hw = HardwareState(need + GIB // 2 + 20 * MIB, CARD, 50.0)
    assert r.check(catalog.get(B8), hw, False).kind == "does_not_fit"  # type: ignore[union-attr]
    r.set_buffer_gib(0.5)
    assert r.config.selection.buffer_gib == 0.5
    assert r.check(catalog.get(B8), hw, False).fits  # type: ignore[union-attr]
    r.set_buffer_gib(0.6)  # 0.6 GiB is more than the 0.52 GiB left over
    assert r.check(catalog.get(B8), hw, False).kind == "does_not_fit"  # type: ignore[union-attr]


def test_remote_endpoint_rejections_and_its_fallback_note(catalog: Catalog,
                                                          tmp_path: Path) -> None:
    r = router(catalog, tmp_path)
    remote = catalog.get("remote")
    hw = HardwareState(15 * GIB, CARD, 50.0)
    off = r.check(remote, hw, False)
    assert off.kind == "remote_off"  # type: ignore[union-attr]
    assert off.reason == ("no remote endpoint configured (set remote.base_url and "  # type: ignore[union-attr]
                          "remote.model in your config)")
    # Enabled without an address is still off; an address while disabled too.
    assert r.check(remote.model_copy(update={"enabled": True}), hw,
                   False).kind == "remote_off"  # type: ignore[union-attr]
    assert r.check(remote.model_copy(update={"base_url": "http://gpu:8000/v1"}), hw,
                   False).kind == "remote_off"  # type: ignore[union-attr]
    configured = remote.model_copy(update={"enabled": True, "base_url": "http://gpu:8000/v1",
                                           "remote_model": "big"})
    assert r.check(configured, hw, False) is None  # usable, with no local estimate
    private = r.check(configured, hw, True)
    assert private.kind == "private"  # type: ignore[union-attr]
    assert private.reason == "the task is private: it must not leave this machine"  # type: ignore[union-attr]
    with_remote = catalog.with_entry(configured)
    decision = router(with_remote, tmp_path).route("x", "simple_extraction", hw)
    assert decision.model_id == "remote"
    assert decision.estimate is None
    assert decision.notes[-1].endswith("remote comes from the remote endpoint")
    assert decision.explain().endswith("  chosen remote")
    # use_remote off: the endpoint is not a candidate at all.
    no_remote = router(with_remote, tmp_path, {"selection": {"use_remote": False}})
    decision = no_remote.route("x", "simple_extraction", hw)
    assert "remote" not in decision.candidates
    assert decision.model_id is None


def test_a_fallback_within_the_rules_own_list(catalog: Catalog, tmp_path: Path) -> None:
    user = {"selection": {"vram_bands": [{"rules": [{"prefer": [B14, INSTRUCT]}]}]}}
    put_on_disk(catalog, INSTRUCT)
    r = router(catalog, tmp_path, user, Switching(fallback_cascade=(B14, B8)))
    decision = r.route("x", "simple_extraction", HardwareState(15 * GIB, CARD, 50.0))
    assert decision.model_id == INSTRUCT
    assert decision.candidates[:3] == (B14, INSTRUCT, B8)
    assert decision.notes[-1].endswith(f"{INSTRUCT} comes from the rule's own list")
    assert decision.band == "free 15.00 GiB >= 0 GiB"  # one band: no bound below it


def test_candidates_when_the_preferred_model_is_outside_the_cascade(catalog: Catalog,
                                                                    tmp_path: Path) -> None:
    r = router(catalog, tmp_path)
    # Not in the cascade: the whole cascade follows it, then the local tier.
    assert r.candidates(("demo-small",)) == (
        "demo-small", "qwen3-30b-a3b-instruct-2507", B14, B8, THINKING, INSTRUCT,
        "demo-tiny-a", "demo-tiny-b")
    # Several preferred: the cascade continues below the highest of them, nothing repeated.
    assert r.candidates((B8, B14)) == (B8, B14, THINKING, INSTRUCT, *LOCAL_TIER)
    assert r.candidates((INSTRUCT, B8)) == (INSTRUCT, B8, THINKING, *LOCAL_TIER)


def test_what_if_states_are_marked_assumed() -> None:
    measured = HardwareState(10 * GIB, CARD, 45.0, "simulated")
    assert measured.assume() == measured
    both = measured.assume(free_bytes=4 * GIB, temperature_c=85.0)
    assert (both.free_bytes, both.temperature_c, both.total_bytes, both.label) == (
        4 * GIB, 85.0, CARD, "simulated")
    assert both.assumed == ("free_bytes", "temperature_c")
    assert measured.assume(temperature_c=0.0).assumed == ("temperature_c",)
    assert measured.assume(free_bytes=0).free_bytes == 0
    again = both.assume(free_bytes=GIB)
    assert again.assumed == ("free_bytes", "temperature_c")  # not listed twice
    assert again.free_bytes == GIB


def test_the_explanation_and_json_of_a_what_if_decision(catalog: Catalog, tmp_path: Path) -> None:
    put_on_disk(catalog, "demo-tiny-a")
    hw = HardwareState(10 * GIB, CARD, 45.0, "simulated rtx4090-laptop").assume(
        free_bytes=6 * GIB, temperature_c=80.5)
    decision = router(catalog, tmp_path).route("hello", "no_such_type", hw)
    assert decision.model_id == "demo-tiny-a"
    text = decision.explain()
    lines = text.splitlines()
    assert lines[0] == "Chosen model: demo-tiny-a"
    assert lines[1] == "Complexity 0.40 for task type 'no_such_type', 5 characters:"
    assert lines[2].startswith("  +0.40  task_type: ")
    assert ("Hardware (simulated rtx4090-laptop): 6.00 GiB free of 16.00 GiB, 80.5 C"
            in lines)
    assert "  what-if: assumed, not measured: 6.00 GiB free, 80.5 C" in lines
    assert "  selection: hot: 80.5 C > 80 C; complexity 0.40; rule: complexity < 0.5 -> " \
           f"prefer {THINKING}" in lines
    assert "  note: unknown task type 'no_such_type' scored as 0.4" in lines
    assert "Candidates in order: " + ", ".join(decision.candidates) in lines
    assert lines[-1].startswith("  chosen demo-tiny-a: context 1024 tokens, "
                                "gpu_memory_utilization 0.")
    assert f"  rejected {THINKING}: not on disk (no config.json in " in text
    data = decision.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["model"] == "demo-tiny-a"
    assert (data["complexity"], data["raw_complexity"], data["capped"]) == (0.4, 0.4, False)
    assert (data["task_type"], data["task_type_known"], data["chars"]) == (
        "no_such_type", False, 5)
    assert data["hardware"] == {"free_bytes": 6 * GIB, "total_bytes": CARD,
                                "temperature_c": 80.5, "label": "simulated rtx4090-laptop",
                                "assumed": ["free_bytes", "temperature_c"]}
    assert (data["private"], data["hot"]) == (False, True)
    assert data["band"] == "hot: 80.5 C > 80 C"
    assert data["rule"] == decision.rule
    assert data["candidates"] == list(decision.candidates)
    assert data["rejected"][0] == {"model": THINKING, "kind": "not_on_disk",
                                   "reason": decision.rejected[0].reason}
    assert data["estimate"]["model"] == "demo-tiny-a"
    assert data["estimate"]["fits"] is True
    assert data["notes"] == list(decision.notes)
    assert data["explanation"] == text


def test_the_explanation_when_nothing_is_usable(catalog: Catalog, tmp_path: Path) -> None:
    decision = router(catalog, tmp_path).route("", "simple_extraction",
                                               HardwareState(GIB, CARD, None), private=True)
    assert decision.private is True
    assert decision.as_dict()["private"] is True
    text = decision.explain()
    assert text.splitlines()[0] == "Chosen model: none (no candidate is usable)"
    assert "Hardware: 1.00 GiB free of 16.00 GiB, temperature unknown" in text
    assert f"Candidates in order: {THINKING}, {INSTRUCT}, demo-small" in text
    assert "what-if" not in text
    assert "chosen" not in text
    assert decision.as_dict()["estimate"] is None
    assert decision.as_dict()["model"] is None
    assert decision.notes[-1] == "no candidate is usable: the manager's fallback cascade decides"


@pytest.mark.parametrize(("celsius", "text"), [(80.5, "80.5 C"), (41.53, "41.5 C"),
                                                (80.0, "80 C"), (79.96, "80 C")])
def test_temperatures_read_to_a_tenth(celsius: float, text: str, catalog: Catalog) -> None:
    hw = HardwareState(GIB, CARD, celsius)
    decision = Router(load_router_config(catalog), catalog).route("", "x", hw)
    assert f"of 16.00 GiB, {text}" in decision.explain()


def test_models_dir_from_the_data_directory(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog without a models directory: the router looks in the data directory's."""
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    catalog = load_catalog()
    target = tmp_path / "data" / "models" / "demo-tiny-a"
    target.mkdir(parents=True)
    (target / "config.json").write_text('{"model_type": "qwen3"}')
    r = Router(load_router_config(catalog), catalog)
    decision = r.route("x", "simple_extraction", HardwareState(15 * GIB, CARD, 50.0))
    assert decision.model_id == "demo-tiny-a"


def test_two_bands_and_a_rule_preferring_two_models(catalog: Catalog, tmp_path: Path) -> None:
    """With two bands the upper one reads ">= the lower one's bound"; a rule's whole prefer list
    is in its text."""
    user = {"selection": {"vram_bands": [
        {"below_gib": 8, "rules": [{"prefer": [THINKING]}]},
        {"rules": [{"prefer": [B8, INSTRUCT]}]}]}}
    decision = router(catalog, tmp_path, user).route("x", "simple_extraction",
                                                     HardwareState(15 * GIB, CARD, 50.0))
    assert decision.band == "free 15.00 GiB >= 8 GiB"
    assert decision.rule == (f"complexity 0.10; rule: no rule above it applies -> prefer {B8}, "
                             f"{INSTRUCT}")
    assert (f"  selection: free 15.00 GiB >= 8 GiB; complexity 0.10; rule: no rule above it "
            f"applies -> prefer {B8}, {INSTRUCT}") in decision.explain().splitlines()
    assert decision.candidates[:2] == (B8, INSTRUCT)


def test_a_hot_rule_on_free_memory(catalog: Catalog, tmp_path: Path) -> None:
    """The hot rules may ask for free memory too: they compare the device's free bytes."""
    user = {"selection": {"hot": {"rules": [{"above_free_gib": 12, "prefer": [B8]},
                                            {"prefer": [THINKING]}]}}}
    r = router(catalog, tmp_path, user)
    roomy = r.route("x", "simple_extraction", HardwareState(15 * GIB, CARD, 85.0))
    assert (roomy.hot, roomy.band) == (True, "hot: 85 C > 80 C")
    assert roomy.rule == f"complexity 0.10; rule: free > 12 GiB -> prefer {B8}"
    assert roomy.candidates[0] == B8
    tight = r.route("x", "simple_extraction", HardwareState(10 * GIB, CARD, 85.0))
    assert tight.rule == f"complexity 0.10; rule: no rule above it applies -> prefer {THINKING}"
    assert tight.candidates[0] == THINKING


def test_the_estimator_given_to_the_router_sizes_its_choice(catalog: Catalog,
                                                            tmp_path: Path) -> None:
    """The runtime hands the router an estimator with its own settings (the CPU engine's
    overhead, say): the chosen model's estimate follows them, its utilization step too."""
    put_on_disk(catalog, "demo-tiny-a")
    settings = EstimatorSettings(base_overhead_bytes=5 * GIB // 4, utilization_resolution=100)
    estimator = Estimator(catalog, settings)
    r = Router(load_router_config(catalog), catalog, estimator=estimator)
    hw = HardwareState(15 * GIB, CARD, 50.0)
    decision = r.route("x", "simple_extraction", hw)
    assert decision.model_id == "demo-tiny-a"
    assert decision.estimate == estimator.fit_context(catalog.get("demo-tiny-a"), CARD,
                                                      15 * GIB, GIB)
    assert decision.estimate is not None
    assert decision.estimate.overhead_bytes > 5 * GIB // 4
    assert decision.estimate.gpu_memory_utilization == 0.08  # in hundredths, as configured


def test_the_model_on_disk_decides_its_maximum_context(catalog: Catalog, tmp_path: Path) -> None:
    """config.json on disk says 512 positions where the catalog says 4096: the router loads 512
    tokens, and does not refuse the model for holding fewer than min_context_tokens (1024)."""
    directory = catalog.local_path(catalog.get("demo-tiny-a"))
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(
        '{"model_type": "qwen3", "max_position_embeddings": 512}')
    decision = router(catalog, tmp_path).route("x", "simple_extraction",
                                               HardwareState(15 * GIB, CARD, 50.0))
    assert decision.model_id == "demo-tiny-a"
    assert decision.estimate is not None
    assert (decision.estimate.context_tokens, decision.estimate.model_max_context) == (512, 512)
    assert decision.estimate.source == f"config.json in {directory}"
    assert decision.explain().splitlines()[-1].startswith(
        "  chosen demo-tiny-a: context 512 tokens, ")


def test_a_default_context_below_the_minimum_is_enough(tmp_path: Path) -> None:
    """A model configured to load with 512 tokens of context (its maximum is 4096) is taken:
    the minimum-context rule asks no more than the context it would be loaded with."""
    catalog = load_catalog({"demo-tiny-a": {"default_context": 512}}, tmp_path / "c.yaml",
                           models_dir=tmp_path / "models")
    put_on_disk(catalog, "demo-tiny-a")
    decision = router(catalog, tmp_path).route("x", "simple_extraction",
                                               HardwareState(15 * GIB, CARD, 50.0))
    assert decision.model_id == "demo-tiny-a"
    assert decision.estimate is not None
    assert (decision.estimate.context_tokens, decision.estimate.model_max_context) == (512, 4096)
