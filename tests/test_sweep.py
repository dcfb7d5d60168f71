"""Sweeps: the plan, Ray equal to serial, resume after a killed sweep, failures reported, bad input refused early."""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require

from rlexplain import cli
from rlexplain.errors import SweepError
from rlexplain.sweep import SweepSpec, plan, sweep

BREAKOUT = Path(__file__).resolve().parents[1] / "agents" / "breakout-dqn"
TWO = [str(BREAKOUT / "rl_model_200000_steps.zip"), str(BREAKOUT / "rl_model_1000000_steps.zip")]
SMALL_EVALUATE = {"n_states": 6, "steps": 8, "n_sanity": 2, "max_steps": 200}


def spec(out, **values) -> SweepSpec:
    data = {"agents": TWO, "seeds": [0, 1], "out": str(out),
            "jobs": {"record": {"max_steps": 30, "video": False}, "evaluate": SMALL_EVALUATE}}
    data.update(values)
    return SweepSpec.from_mapping(data)


def table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("seconds", "seconds_per_state", "relative_time")} for r in rows]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = require("ray", "the sweep's Ray backend")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_plan_is_the_cross_product_with_stable_hashes(tmp_path):
    jobs = plan(spec(tmp_path / "a", jobs=["record", "evaluate", "compare", "strategies"],
                     methods=["epsilon_gamma_box", "gradient"]))
    kinds = [j.kind for j in jobs]
    # per agent x seed: one record per method and one evaluate of all methods; per seed x method one compare;
    # per method one strategies job over the record runs of that method
    assert kinds.count("record") == 2 * 2 * 2 and kinds.count("evaluate") == 2 * 2
    assert kinds.count("compare") == 2 * 2 and kinds.count("strategies") == 2
    assert {j.method for j in jobs if j.kind == "evaluate"} == {"epsilon_gamma_box,gradient"}
    strategies = next(j for j in jobs if j.kind == "strategies" and j.method == "gradient")
    assert len(strategies.needs) == 4  # 2 agents x 2 seeds recorded with that method
    assert len({j.key for j in jobs}) == len(jobs)
    again = plan(spec(tmp_path / "b", jobs=["record", "evaluate", "compare", "strategies"],
                      methods=["epsilon_gamma_box", "gradient"]))
    assert [j.key for j in again] == [j.key for j in jobs]  # the hash is independent of the folder
    changed = plan(spec(tmp_path / "c", jobs={"record": {"max_steps": 31}}))
    assert not {j.key for j in changed} & {j.key for j in jobs}


def test_ray_sweep_equals_the_serial_sweep(tmp_path, ray_cluster):
    serial = sweep(spec(tmp_path / "serial"), backend="serial", progress=False)
    on_ray = sweep(spec(tmp_path / "ray"), backend="ray", progress=False)
    assert on_ray.backend.startswith("ray") and serial.backend == "serial"
    assert [r["status"] for r in on_ray.rows] == ["complete"] * 8
    rows_serial, rows_ray = table(serial.out / "sweep.csv"), table(on_ray.out / "sweep.csv")
    assert without_timing(rows_serial) == without_timing(rows_ray)
    assert {"job", "agent", "game", "seed", "method", "status", "output", "return", "abc_epsilon_gamma_box",
            "density_ball"} <= set(rows_ray[0])
    for row in rows_ray:
        a, b = serial.out / row["output"], on_ray.out / row["output"]
        name = "steps.csv" if row["job"] == "record" else "evaluate.csv"
        assert without_timing(table(a / name)) == without_timing(table(b / name)), row["output"]
    page = (on_ray.out / "report.html").read_text()
    assert "attention_Breakout.png" in page and "faithfulness_Breakout.png" in page
    assert (on_ray.out / "figures" / "returns_Breakout.png").stat().st_size > 1000


def test_resume_after_a_killed_sweep_redoes_only_unfinished_jobs(tmp_path):
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "rlexplain.cli", "sweep", "--agents", *TWO, "--seeds", "0", "1",
               "--jobs", "record", "--max-steps", "120", "--serial", "--quiet", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done: list[dict] = []
    while time.time() < deadline and process.poll() is None:
        if (out / "sweep.csv").is_file():
            done = [r for r in table(out / "sweep.csv") if r["status"] == "complete"]
            if done:
                break
        time.sleep(0.05)
    assert done, "the sweep finished no job in time"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {r["output"]: (out / r["output"] / "sweep_job.json").stat().st_mtime_ns for r in done}
    resumed = sweep(SweepSpec.from_mapping({"agents": TWO, "seeds": [0, 1], "out": str(out),
                                            "jobs": {"record": {"max_steps": 120}}}), backend="serial",
                    progress=False)
    statuses = {r["output"]: r["status"] for r in resumed.rows}
    assert all(statuses[o] == "skipped" for o in finished)
    assert sorted(statuses.values()).count("complete") == 4 - len(finished)
    for output, mtime in finished.items():  # untouched
        assert (out / output / "sweep_job.json").stat().st_mtime_ns == mtime
    for row in resumed.rows:
        assert len(table(out / row["output"] / "steps.csv")) == 120


def test_sigterm_stops_a_ray_sweep_cleanly_and_it_resumes(tmp_path):
    require("ray", "the sweep's Ray backend")
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "rlexplain.cli", "sweep", "--agents", str(BREAKOUT), "--seeds", "0", "1",
               "--jobs", "record", "--max-steps", "150", "--ray", "--ray-cpus", "2", "--quiet", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
        if (out / "sweep.csv").is_file() and any(r["status"] == "complete" for r in table(out / "sweep.csv")):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "rlexplain: interrupted" in err
    before = {r["output"]: r["status"] for r in table(out / "sweep.csv")}
    assert "complete" in before.values() and set(before.values()) <= {"complete", "interrupted"}
    resumed = sweep(SweepSpec.from_mapping({"agents": [str(BREAKOUT)], "seeds": [0, 1], "out": str(out),
                                            "jobs": {"record": {"max_steps": 150}}}), backend="serial",
                    progress=False)
    after = {r["output"]: r["status"] for r in resumed.rows}
    # finished jobs are skipped (also one that finished in its worker as the signal came); the others are redone
    assert all(after[o] == "skipped" for o, s in before.items() if s == "complete")
    assert set(after.values()) <= {"skipped", "complete"} and "complete" in after.values()
    for output in after:
        assert len(table(out / output / "steps.csv")) == 150


def test_a_failing_job_is_reported_and_the_others_go_on(tmp_path, capsys):
    code = cli.main(["sweep", "--agents", TWO[0], "--seeds", "0", "--jobs", "record,evaluate", "--max-steps", "20",
                     "--serial", "--quiet", "--out", str(tmp_path / "s")])
    assert code == 0
    # region 5 does not divide the 84x84 input: every evaluate job fails with that one-line error
    result = sweep(spec(tmp_path / "f", agents=[TWO[0]], seeds=[0], jobs={"record": {"max_steps": 20},
                                                                          "evaluate": {"region": 5}}),
                   backend="serial", progress=False)
    statuses = {r["job"]: (r["status"], r.get("error", "")) for r in result.rows}
    assert statuses["record"][0] == "complete"
    assert statuses["evaluate"][0] == "failed" and "--region 5 does not divide" in statuses["evaluate"][1]
    assert "failed: evaluate" in result.table()
    assert "failed" in (result.out / "report.html").read_text()


def test_a_sweep_file_runs_like_the_command_line(tmp_path, capsys):
    file = tmp_path / "sweep.yaml"
    file.write_text(f"agents: [{TWO[0]}]\ngames: [Breakout]\nseeds: [3]\nmethods: [epsilon_plus_flat]\n"
                    f"jobs:\n  record: {{max_steps: 15, video: false}}\nout: {tmp_path / 'out'}\n")
    assert cli.main(["sweep", str(file), "--serial", "--quiet"]) == 0
    rows = table(tmp_path / "out" / "sweep.csv")
    assert [(r["job"], r["seed"], r["method"], r["status"]) for r in rows] == \
        [("record", "3", "epsilon_plus_flat", "complete")]
    assert "1 complete" in capsys.readouterr().out


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("argv, message", [
    (["--agents", TWO[0], "--jobs", "record,replay"], "unknown job 'replay'"),
    (["--agents", TWO[0], "--methods", "lrp_magic"], "unknown method 'lrp_magic'"),
    (["--agents", "pong-ppo@500k", "--games", "Breakout"], "plays Pong, which is not among the sweep's games"),
    (["--agents", TWO[0], "--games", "Pong"], "plays Breakout, which is not among the sweep's games"),
    (["--agents", "no/such/agent.zip"], "agent no/such/agent.zip"),
    (["--agents", TWO[0], "--address", "127.0.0.1:{port}"], "cannot reach the Ray cluster at 127.0.0.1"),
    (["--agents", TWO[0], "--device", "cuda"] if not __import__("torch").cuda.is_available() else
     ["--agents", TWO[0], "--device", "tpu"], "device"),
    (["--agents", TWO[0], "--jobs", "strategies"], "strategies jobs need record jobs"),
    (["--agents", TWO[0], "--methods", "random"], "random is an evaluation baseline"),
])
def test_bad_sweeps_fail_in_one_line_before_any_job(tmp_path, capsys, argv, message):
    out = tmp_path / "never"
    argv = [a.replace("{port}", str(closed_port())) for a in argv]
    assert cli.main(["sweep", *argv, "--serial" if "--address" not in argv else "--ray", "--out", str(out),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_unknown_keys_in_a_sweep_file_are_refused(tmp_path, capsys):
    file = tmp_path / "s.yaml"
    file.write_text(f"agents: [{TWO[0]}]\nseed: [0]\nout: {tmp_path / 'o'}\n")
    assert cli.main(["sweep", str(file), "--serial"]) == 2
    assert "unknown key 'seed'" in capsys.readouterr().err
    file.write_text(f"agents: [{TWO[0]}]\njobs:\n  record: {{max_step: 10}}\nout: {tmp_path / 'o'}\n")
    assert cli.main(["sweep", str(file), "--serial"]) == 2
    assert "unknown option 'max_step' for record jobs" in capsys.readouterr().err
    with pytest.raises(SweepError, match="sets it"):
        SweepSpec.from_mapping({"agents": TWO, "out": "x", "jobs": {"record": {"seed": 1}}})
    assert not (tmp_path / "o").exists()


def test_without_ray_the_default_backend_is_serial(tmp_path, monkeypatch):
    import rlexplain.sweep as sweep_module

    monkeypatch.setattr(sweep_module, "_ray_installed", lambda: False)
    result = sweep(spec(tmp_path / "s", agents=[TWO[0]], seeds=[0], jobs={"record": {"max_steps": 10}}),
                   progress=False)
    assert result.backend == "serial" and result.rows[0]["status"] == "complete"
    with pytest.raises(SweepError, match="pip install 'rlexplain\\[ray\\]'"):
        sweep(spec(tmp_path / "r", agents=[TWO[0]], seeds=[0]), backend="ray", progress=False)
    assert os.environ.get("RAY_ADDRESS") is None


def test_a_job_larger_than_the_cluster_is_refused(tmp_path, ray_cluster):
    with pytest.raises(SweepError, match="each job reserves 3 CPUs but the Ray cluster has 2 CPUs"):
        sweep(spec(tmp_path / "s", agents=[TWO[0]], seeds=[0], cpus_per_job=3), backend="ray", progress=False)
    assert ray_cluster.is_initialized()  # the cluster the caller started is left running


def test_one_file_named_twice_is_one_agent(tmp_path):
    jobs = plan(spec(tmp_path / "s", agents=[TWO[1], "breakout-dqn", str(BREAKOUT)], seeds=[0],
                     jobs=["record", "compare"]))
    assert [j.kind for j in jobs].count("record") == 3  # 200k, 500k, 1M: the final checkpoint once
    assert len([j for j in jobs if j.kind == "compare"][0].agents) == 3
