"""Training workers' allocator (``sparsegrad_service.allocator``): jemalloc preloaded where the machine has it, the
operator's own preload kept, the setting that turns it off, what a process reports, the kept pages handed back, and
results unchanged by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsegrad_cli.launcher import training_worker_env
from sparsegrad_service import allocator
from sparsegrad_service.allocator import JEMALLOC_CONF, jemalloc_library, process_allocator, with_jemalloc
from sparsegrad_service.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def _library() -> str:
    library = jemalloc_library()
    assert library is not None, "jemalloc is missing: sudo apt-get install -y libjemalloc2 (scripts/test_prerequisites.sh)"
    return library


def test_jemalloc_is_preloaded_with_its_configuration_and_the_operators_choices_are_kept() -> None:
    library = _library()
    env = with_jemalloc({"PATH": "/bin"})
    assert env == {"PATH": "/bin", "LD_PRELOAD": library, "MALLOC_CONF": JEMALLOC_CONF}
    assert with_jemalloc({"LD_PRELOAD": "libtcmalloc.so"}) == {"LD_PRELOAD": "libtcmalloc.so"}
    assert with_jemalloc({"MALLOC_CONF": "narenas:2"})["MALLOC_CONF"] == "narenas:2"


def test_without_jemalloc_the_environment_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "jemalloc_library", lambda: None)
    assert with_jemalloc({"PATH": "/bin"}) == {"PATH": "/bin"}


def test_the_worker_setting_turns_it_off(tmp_path: Path) -> None:
    _library()
    on = training_worker_env(Settings(data_dir=tmp_path), {"PATH": "/bin"})
    off = training_worker_env(Settings(data_dir=tmp_path, worker_jemalloc=False), {"PATH": "/bin"})
    assert "LD_PRELOAD" in on and off == {"PATH": "/bin"}


def test_a_process_reports_its_allocator(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n")
    assert process_allocator(maps) == "jemalloc"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 12 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert process_allocator(maps) == "system"
    assert process_allocator(tmp_path / "missing") == "system"


TRAIN = """
import hashlib, torch
from support.tiny import VOCAB, tiny_bert
from sparsegrad_core import build_optimizer
from sparsegrad_core.config import SparseGradConfig
from sparsegrad_core.methods import MethodSpec, prepare_model
from sparsegrad_core.training import release_allocator_pages
from sparsegrad_service.allocator import process_allocator

torch.manual_seed(0)
model = tiny_bert(None, dropout=0.1, hidden=64, intermediate=256)
g = torch.Generator().manual_seed(1)
batches = [{"input_ids": torch.randint(5, VOCAB, (8, 24), generator=g), "labels": torch.randint(0, 2, (8,), generator=g)}
           for _ in range(4)]
prepared = prepare_model(model, MethodSpec(type="sparsegrad", sparsegrad=SparseGradConfig(density=0.05,
                                                                                        calibration_steps=2)), batches[:2])
opt = build_optimizer(prepared.model, lr=1e-3)
losses = []
for step in range(6):
    loss = prepared.model(**batches[step % 4]).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    losses.append(loss.item())
    release_allocator_pages()
digest = hashlib.sha256(repr(losses).encode() + b"".join(p.detach().numpy().tobytes() for p in prepared.model.parameters()))
print(process_allocator(), digest.hexdigest())
"""


def test_training_under_jemalloc_gives_the_same_results_bit_for_bit() -> None:
    _library()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]), "OMP_NUM_THREADS": "1"}
    env.pop("LD_PRELOAD", None)
    outputs = [subprocess.run([sys.executable, "-c", TRAIN], env=e, capture_output=True, text=True, timeout=300)
               for e in (env, with_jemalloc(env))]
    for out in outputs:
        assert out.returncode == 0, out.stderr[-2000:]
    (system, plain), (jemalloc, preloaded) = (out.stdout.split() for out in outputs)
    assert (system, jemalloc) == ("system", "jemalloc")
    assert plain == preloaded


RELEASE = """
import json
from pathlib import Path
from sparsegrad_core.training import release_allocator_pages
from sparsegrad_service.allocator import process_allocator

def rss_mib():
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

blocks = [bytearray(b"x" * (8 << 20)) for _ in range(48)]  # 384 MiB, written, in blocks a training step frees
freed_from = rss_mib()
del blocks
kept = rss_mib()
released = release_allocator_pages()
print(json.dumps({"allocator": process_allocator(), "freed_from": freed_from, "kept": kept, "released": released,
                  "after": rss_mib()}))
"""


def test_the_kept_pages_go_back_to_the_kernel_on_release() -> None:
    _library()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("LD_PRELOAD", None)
    env.pop("MALLOC_CONF", None)
    system, jemalloc = (json.loads(subprocess.run([sys.executable, "-c", RELEASE], env=e, capture_output=True,
                                                  text=True, timeout=120, check=True).stdout)
                        for e in (env, with_jemalloc(env)))
    assert jemalloc["allocator"] == "jemalloc" and jemalloc["released"] is True
    assert jemalloc["kept"] > jemalloc["freed_from"] - 64, "jemalloc with JEMALLOC_CONF should keep freed pages"
    assert jemalloc["after"] < jemalloc["kept"] - 300, jemalloc
    assert system["allocator"] == "system" and system["released"] is False


def test_periodic_release_runs_every_n_steps_and_after_each_evaluation() -> None:
    from sparsegrad_core.training import PeriodicRelease

    calls: list[str] = []
    hook = PeriodicRelease(lambda: calls.append("release"), every=3)
    hook.on_train_begin(start_step=10, total_steps=30)
    for step in range(11, 20):
        hook.on_step(step, {})
        calls.append(str(step))
    assert calls == ["11", "12", "release", "13", "14", "15", "release", "16", "17", "18", "release", "19"]
    calls.clear()
    hook.on_eval(20, {})
    hook.on_step(21, {})
    hook.on_step(23, {})
    assert calls == ["release", "release"]
    with pytest.raises(ValueError, match="every"):
        PeriodicRelease(lambda: None, every=0)
    with pytest.raises(ValueError, match="max_growth_mib"):
        PeriodicRelease(lambda: None, max_growth_mib=0)


def test_periodic_release_also_runs_when_the_process_grew_past_the_bound() -> None:
    """A decoder's freed activations can add hundreds of MiB a step: the release comes at the first step whose
    resident set is more than ``max_growth_mib`` above the one measured after the last release."""
    from sparsegrad_core.training import PeriodicRelease

    rss = [1000.0]
    calls: list[str] = []

    def release() -> None:
        calls.append("release")
        rss[0] = 1100.0  # what the release handed back; the baseline is measured after it

    hook = PeriodicRelease(release, every=50, max_growth_mib=500, resident=lambda: rss[0])
    hook.on_train_begin(start_step=0, total_steps=100)
    for step, grown_to in enumerate((1300, 1500, 1501, 1400, 1599, 1601), start=1):
        rss[0] = grown_to
        hook.on_step(step, {})
        calls.append(f"{step}:{grown_to}")
    # 1501 > 1000 + 500: released, and the baseline is now 1100; 1599 is not above 1100 + 500, 1601 is
    assert calls == ["1:1300", "2:1500", "release", "3:1501", "4:1400", "5:1599", "release", "6:1601"]
    unknown = PeriodicRelease(lambda: calls.append("x"), every=2, resident=lambda: None)  # no /proc: steps only
    unknown.on_train_begin(0, 10)
    unknown.on_step(1, {})
    unknown.on_step(2, {})
    assert calls[-1] == "x" and calls.count("x") == 1


def test_resident_mib_reads_this_process() -> None:
    from sparsegrad_core.training.memory_release import resident_mib

    mib = resident_mib()
    assert mib is not None and 10 < mib < 64 * 1024
    assert resident_mib(Path("/nonexistent/statm")) is None
