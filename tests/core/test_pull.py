"""Fetching models: the real huggingface_hub client against a Hub-compatible server on loopback.

The server (tests/hub_server.py) serves the demo model built by the tests; the cache it fills is
laid out by huggingface_hub itself, so the scans below read what the client really writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.models.catalog import load_catalog
from core.models.on_disk import cached_snapshot, model_dir_problem, scan_other_models
from core.models.pull import (
    Progress,
    PullCancelled,
    PullError,
    check_disk,
    download,
    partial_path,
    plan_pull,
)
from tests.hub_server import HubServer, Repo, repo_from_dir

COMMIT = "1" * 40
REPO = "acme/tiny"
WEIGHTS = "model.safetensors"


@pytest.fixture
def hub(demo_model_dir: Path) -> Iterator[HubServer]:
    server = HubServer().start()
    server.repos[REPO] = repo_from_dir(demo_model_dir, COMMIT)
    yield server
    server.stop()


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


@pytest.fixture(autouse=True)
def _endpoint(hub: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


def vrampilot(*args: str, timeout: float = 120,
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gui.launcher", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **env}, check=False,
                          stdin=subprocess.DEVNULL)


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_download_reports_bytes_rate_and_eta_and_fills_the_cache(hub: HubServer,
                                                                 cache: Path) -> None:
    hub.rate = 2_000_000
    seen: list[Progress] = []
    plan = plan_pull(REPO, cache)
    assert plan.commit == COMMIT
    assert {f.name for f in plan.files} >= {"config.json", WEIGHTS, "tokenizer.json"}
    assert plan.missing_bytes == plan.total_bytes - len(hub.repos[REPO].files["config.json"])
    snapshot = download(plan, seen.append)
    assert [p.done_bytes for p in seen] == sorted(p.done_bytes for p in seen)
    assert seen[-1].done_bytes == seen[-1].total_bytes == plan.missing_bytes
    assert seen[-1].files_done == len(plan.missing)
    assert any(p.rate_bytes_per_s > 0 and p.eta_s is not None and p.eta_s > 0 for p in seen)
    assert seen[-1].eta_s == 0
    # Laid out by the client: scan_cache_dir reads it, and the snapshot is a complete model.
    from huggingface_hub import scan_cache_dir

    repos = {r.repo_id: r for r in scan_cache_dir(cache).repos}
    assert repos[REPO].nb_files == len(plan.files)
    assert cached_snapshot(REPO, cache) == snapshot
    assert model_dir_problem(snapshot) is None
    assert all(hub.gets(name) == 1 for name in hub.repos[REPO].files if name in
               {f.name for f in plan.files})


def test_cancel_keeps_finished_files_and_a_second_run_fetches_the_rest(hub: HubServer,
                                                                      cache: Path) -> None:
    # huggingface_hub reports every 10 MB chunk: the 1.4 MB weights are one report, which
    # raises the cancel before the file is written.
    hub.rate = 500_000
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.file == WEIGHTS:
            cancel.set()

    plan = plan_pull(REPO, cache)
    with pytest.raises(PullCancelled):
        download(plan, on_progress, cancel)
    assert cached_snapshot(REPO, cache) is None  # a partial download is never on disk
    assert not list(cache.rglob("*.incomplete"))
    hub.rate = None
    again = plan_pull(REPO, cache)
    assert [f.name for f in again.missing] == [WEIGHTS]  # the small files were kept
    snapshot = download(again)
    assert cached_snapshot(REPO, cache) == snapshot
    assert hub.gets("tokenizer.json") == 1
    assert hub.gets(WEIGHTS) == 2


def test_not_enough_disk_space_refuses_before_fetching_weights(hub: HubServer,
                                                              cache: Path) -> None:
    plan = plan_pull(REPO, cache)
    with pytest.raises(PullError, match="not enough disk space for acme/tiny: it needs"):
        check_disk(plan, free_bytes=lambda path: 10 * 1024**2)
    check_disk(plan)  # this machine's real disk has room for 1.4 MB
    assert hub.gets(WEIGHTS) == 0


def test_truncated_file_is_detected_and_never_counts_as_on_disk(hub: HubServer,
                                                                cache: Path) -> None:
    hub.truncate = {WEIGHTS}
    with pytest.raises(PullError, match=r"arrived incomplete .*run the pull again") as info:
        download(plan_pull(REPO, cache))
    assert info.value.exit_code == 1
    assert cached_snapshot(REPO, cache) is None
    hub.truncate = set()
    assert cached_snapshot(REPO, cache) is None
    download(plan_pull(REPO, cache))
    assert cached_snapshot(REPO, cache) is not None


def test_corrupt_file_fails_its_hash_and_is_removed(hub: HubServer, cache: Path) -> None:
    hub.corrupt = {WEIGHTS}
    with pytest.raises(PullError, match="does not match the Hub's SHA-256; the damaged file was "
                                        "removed"):
        download(plan_pull(REPO, cache))
    assert cached_snapshot(REPO, cache) is None
    hub.corrupt = set()
    again = plan_pull(REPO, cache)
    assert [f.name for f in again.missing] == [WEIGHTS]
    download(again)
    assert cached_snapshot(REPO, cache) is not None


def test_missing_repository_network_error_and_offline_mode_each_say_what_to_do(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PullError, match="repository nobody/nothing does not exist") as missing:
        plan_pull("nobody/nothing", cache)
    assert missing.value.exit_code == 2
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(PullError, match=r"cannot reach http://127\.0\.0\.1:.*check the network"):
        plan_pull(REPO, cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PullError, match="offline mode is on") as offline:
        plan_pull(REPO, cache)
    assert offline.value.exit_code == 2


def test_scan_finds_catalog_repos_and_other_models_but_not_partial_ones(
        hub: HubServer, cache: Path, tmp_path: Path, demo_model_dir: Path) -> None:
    hub.repos["someone/other"] = repo_from_dir(demo_model_dir, "2" * 40)
    hub.repos["someone/partial"] = repo_from_dir(demo_model_dir, "3" * 40)
    download(plan_pull(REPO, cache))
    download(plan_pull("someone/other", cache))
    hub.rate = 100_000
    cancel = threading.Event()
    with pytest.raises(PullCancelled):
        download(plan_pull("someone/partial", cache),
                 lambda p: cancel.set() if p.file == WEIGHTS else None, cancel)
    models = tmp_path / "models"
    own = models / "acme" / "own"
    shutil.copytree(demo_model_dir, own)
    cut = models / "acme" / "cut"
    shutil.copytree(demo_model_dir, cut)
    with (cut / WEIGHTS).open("r+b") as f:
        f.truncate(100_000)
    catalog = load_catalog({"hub-tiny": {
        "display_name": "tiny from the hub", "hf_repo": REPO, "quantization": "fp32",
        "mode": "instruct", "priority": "DEMO", "engine": "vllm", "default_context": 512,
        "architecture": load_catalog().get("demo-tiny-a").architecture.model_dump()}},
        models_dir=models)
    entry = catalog.get("hub-tiny")
    assert catalog.local_path(entry) == cached_snapshot(REPO, cache)
    assert catalog.is_on_disk(entry)
    found, skipped = scan_other_models(catalog, models, cache)
    by_name = {m.name: m for m in found}
    assert set(by_name) == {"someone/other", "acme/own"}
    assert by_name["someone/other"].origin == "hf-cache"
    assert by_name["acme/own"].origin == "models-dir"
    assert by_name["someone/other"].architecture == "Qwen3ForCausalLM"
    assert by_name["someone/other"].size_bytes == (demo_model_dir / WEIGHTS).stat().st_size
    assert [s["name"] for s in skipped] == ["acme/cut"]
    assert "model.safetensors is truncated (100000 of" in str(skipped[0]["reason"])


def test_cli_pull_prints_fit_and_progress_then_models_shows_it(hub: HubServer,
                                                               tmp_path: Path) -> None:
    result = vrampilot("pull", REPO, "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    evs = events(result.stdout)
    assert evs[0]["event"] == "plan"
    assert evs[0]["fits"] is True
    assert "fits:" in str(evs[0]["reason"])
    assert any(e["event"] == "progress" for e in evs)
    assert evs[-1]["event"] == "done"
    listing = vrampilot("models", "--json")
    others = json.loads(listing.stdout)["other_models"]
    assert [o["id"] for o in others] == ["local:acme/tiny"]
    assert others[0]["fits"] is True
    assert others[0]["path"] == evs[-1]["path"]
    # Offline, a model already on disk needs nothing: the pull says so and succeeds.
    again = vrampilot("pull", REPO, HF_HUB_OFFLINE="1")
    assert again.returncode == 0
    assert "acme/tiny is already on disk" in again.stderr
    offline = vrampilot("pull", "someone/else", HF_HUB_OFFLINE="1")
    assert offline.returncode == 2
    assert offline.stderr.count("\n") == 1
    assert "offline mode is on" in offline.stderr


def test_cli_ctrl_c_cancels_cleanly(hub: HubServer) -> None:
    hub.rate = 100_000
    proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "pull", REPO, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["file"] == WEIGHTS:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert json.loads(out.splitlines()[-1])["message"].startswith("cancelled; files already "
                                                                  "complete are kept")


def test_cli_model_that_cannot_fit_is_refused_without_yes(hub: HubServer,
                                                          demo_model_dir: Path) -> None:
    big = dict(repo_from_dir(demo_model_dir, "4" * 40).files)
    config = json.loads(big["config.json"])
    config.update(hidden_size=5120, num_hidden_layers=64, num_attention_heads=64,
                  num_key_value_heads=8, head_dim=128, intermediate_size=25600,
                  vocab_size=151936, torch_dtype="bfloat16")
    big["config.json"] = json.dumps(config).encode()
    hub.repos["acme/huge"] = Repo("4" * 40, big)
    result = vrampilot("pull", "acme/huge", "--simulate", "rtx4090-laptop")
    assert result.returncode == 2
    assert "fit on simulated rtx4090-laptop at idle: NO: the weights" in result.stderr
    assert "acme/huge does not fit simulated rtx4090-laptop at idle; pass --yes" in result.stderr
    assert hub.gets(WEIGHTS) == 0
    forced = vrampilot("pull", "acme/huge", "--simulate", "rtx4090-laptop", "--yes")
    assert forced.returncode == 0, forced.stderr[-2000:]


def test_cli_unknown_model_is_one_sentence(hub: HubServer) -> None:
    result = vrampilot("pull", "no-such-model")
    assert result.returncode == 2
    assert "unknown model 'no-such-model'" in result.stderr
    assert "ORG/NAME" in result.stderr
    remote = vrampilot("pull", "demo-tiny-a")
    assert remote.returncode == 2
    assert "has no Hugging Face repository" in remote.stderr


HUB_ENTRY = """
models:
  hub-tiny:
    display_name: Demo tiny fetched from the hub
    hf_repo: acme/tiny
    quantization: fp32
    mode: instruct
    priority: DEMO
    engine: vllm
    default_context: 1024
    architecture: {layers: 2, q_heads: 2, kv_heads: 1, head_dim: 64, hidden: 128,
                   intermediate: 256, params_total: 3.61e5, params_active: 3.61e5,
                   tied_embeddings: true, vocab: 512, max_position: 4096}
"""


@pytest.mark.vllm
def test_pulled_model_loads_in_vllm_and_streams(hub: HubServer, tmp_path: Path) -> None:
    user = tmp_path / "user.yaml"
    user.write_text(HUB_ENTRY)
    pulled = vrampilot("pull", "hub-tiny", "--config", str(user))
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    listing = json.loads(vrampilot("models", "--json", "--config", str(user)).stdout)
    row = next(m for m in listing["models"] if m["id"] == "hub-tiny")
    assert row["on_disk"] is True
    assert "models--acme--tiny/snapshots" in row["path"]
    result = vrampilot("generate", "--model", "hub-tiny", "--max-tokens", "8", "--config",
                       str(user), "Say hello", timeout=500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[done] model hub-tiny: 8 tokens" in result.stderr


def test_runtime_catalog_holds_other_models_so_they_load_like_entries(
        hub: HubServer, cache: Path, tmp_path: Path) -> None:
    import asyncio

    from core.runtime import Runtime

    snapshot = download(plan_pull(REPO, cache))
    runtime = Runtime.create(simulate="rtx4090-laptop", history_path=tmp_path / "h.sqlite3")
    try:
        catalog = runtime.manager.catalog
        entry = catalog.get("local:acme/tiny")
        assert catalog.local_path(entry) == snapshot.resolve()
        assert entry.quantization == "none"
        assert entry.architecture is not None
        assert entry.architecture.layers == 2  # read from the model's own config.json
        plan = runtime.manager.plan_switch("local:acme/tiny")
        assert plan.ok, plan.refusal
    finally:
        asyncio.run(runtime.close())


CHUNK = 10 * 1024**2  # huggingface_hub's download chunk: progress and cancel come per chunk


def big_repo(demo_model_dir: Path, commit: str) -> Repo:
    """The demo repository with 24 MiB of weights (a valid safetensors file), so a transfer
    spans several chunks and can stop half-way."""
    import numpy as np
    from safetensors.numpy import save

    files = dict(repo_from_dir(demo_model_dir, commit).files)
    files[WEIGHTS] = save({"pad": np.arange(6 * 1024**2, dtype=np.float32)})
    return Repo(commit, files)


def test_cancel_mid_file_resumes_from_the_bytes_already_there(
        hub: HubServer, cache: Path, demo_model_dir: Path) -> None:
    hub.repos["acme/big"] = big_repo(demo_model_dir, "6" * 40)
    weights = len(hub.repos["acme/big"].files[WEIGHTS])
    hub.rate = 8_000_000
    cancel = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.file == WEIGHTS and p.done_bytes >= p.total_bytes - weights + CHUNK:
            cancel.set()

    plan = plan_pull("acme/big", cache)
    with pytest.raises(PullCancelled):
        download(plan, on_progress, cancel)
    partial = partial_path(plan, hub.repos["acme/big"].etag(WEIGHTS))
    assert partial.stat().st_size == CHUNK
    assert cached_snapshot("acme/big", cache) is None
    hub.rate = None
    seen: list[Progress] = []
    download(plan_pull("acme/big", cache), seen.append)
    assert ("GET", f"/acme/big/resolve/{'6' * 40}/{WEIGHTS}", f"bytes={CHUNK}-") in hub.log
    assert seen[1].done_bytes == CHUNK  # the resumed bytes count as done, not as transferred
    assert seen[1].rate_bytes_per_s == 0
    assert cached_snapshot("acme/big", cache) is not None
    assert not partial.exists()


def test_a_killed_pull_resumes_after_restart(hub: HubServer, cache: Path,
                                             demo_model_dir: Path) -> None:
    hub.repos["acme/big"] = big_repo(demo_model_dir, "7" * 40)
    weights = len(hub.repos["acme/big"].files[WEIGHTS])
    hub.rate = 4_000_000
    proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "pull", "acme/big", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["file"] == WEIGHTS and \
                int(event["done_bytes"]) >= int(event["total_bytes"]) - weights + CHUNK:
            break
    time.sleep(0.5)  # the chunk reported is written right after the report
    proc.kill()  # a crash: no cleanup runs
    proc.wait(30)
    partials = list((cache / ".vrampilot-partial").rglob("*"))
    assert [p.stat().st_size for p in partials if p.is_file()] == [CHUNK]
    hub.rate = None
    result = vrampilot("pull", "acme/big")
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(m == "GET" and r == f"bytes={CHUNK}-" for m, _, r in hub.log)
    assert cached_snapshot("acme/big", cache) is not None


def test_gated_repository_needs_the_token_from_the_environment(
        hub: HubServer, cache: Path, demo_model_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    hub.repos["acme/gated"] = repo_from_dir(demo_model_dir, "9" * 40)
    hub.gated["acme/gated"] = "hf_test_token"
    with pytest.raises(PullError, match="acme/gated is gated: accept its terms") as refused:
        plan_pull("acme/gated", cache)
    assert refused.value.exit_code == 2
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    snapshot = download(plan_pull("acme/gated", cache))  # every request carries the token
    assert cached_snapshot("acme/gated", cache) == snapshot


def test_a_full_disk_says_so_and_keeps_nothing_half_done(hub: HubServer, cache: Path) -> None:
    plan = plan_pull(REPO, cache)
    # The kernel's own "no space left on device": the weights' partial file is /dev/full.
    partial = partial_path(plan, hub.repos[REPO].etag(WEIGHTS))
    partial.parent.mkdir(parents=True)
    partial.symlink_to("/dev/full")
    with pytest.raises(PullError, match="the disk filled up while downloading acme/tiny: free "
                                        "some space") as full:
        download(plan)
    assert full.value.exit_code == 1
    assert cached_snapshot(REPO, cache) is None


def test_cli_asks_before_fetching_a_model_that_cannot_fit(hub: HubServer,
                                                          demo_model_dir: Path) -> None:
    import pty

    big = dict(repo_from_dir(demo_model_dir, "a" * 40).files)
    config = json.loads(big["config.json"])
    config.update(hidden_size=5120, num_hidden_layers=64, num_attention_heads=64,
                  num_key_value_heads=8, head_dim=128, intermediate_size=25600,
                  vocab_size=151936, torch_dtype="bfloat16")
    big["config.json"] = json.dumps(config).encode()
    hub.repos["acme/huge"] = Repo("a" * 40, big)
    for answer, code in ((b"n\n", 1), (b"y\n", 0)):
        leader, follower = pty.openpty()  # a terminal on stdin: the pull asks
        proc = subprocess.Popen([sys.executable, "-m", "gui.launcher", "pull", "acme/huge",
                                 "--simulate", "rtx4090-laptop"], stdin=follower,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(os.environ))
        os.close(follower)
        os.write(leader, answer)
        _out, err = proc.communicate(timeout=120)
        os.close(leader)
        assert proc.returncode == code, err.decode()[-2000:]
        if code:
            assert "vrampilot pull: not downloaded" in err.decode()
            assert hub.gets(WEIGHTS) == 0
    assert hub.gets(WEIGHTS) == 1
