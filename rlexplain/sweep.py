"""Sweeps: every agent x game x seed x method, each a ``record``, ``evaluate``, ``compare`` or ``strategies`` job.

A sweep is described by a YAML file or the same on the command line::

    agents: [agents/breakout-dqn, hf:sb3/dqn-BreakoutNoFrameskip-v4]   # a folder gives all its checkpoints
    games: [Breakout]            # optional: each agent's own game by default
    seeds: [0, 1]
    methods: [epsilon_gamma_box]
    jobs:                        # a list of names, or names with their options
      record: {max_steps: 2000}
      evaluate: {n_states: 64}
      compare: {}
      strategies: {k: auto}
    out: runs/my-sweep

The jobs are

* ``record``     -- one per agent x seed x method (the fields of :class:`~rlexplain.record.RecordOptions`);
* ``evaluate``   -- one per agent x seed, scoring all the sweep's methods
  (:class:`~rlexplain.evaluate.EvaluateOptions`);
* ``compare``    -- one per game x seed x method, over all the game's agents in training order;
* ``strategies`` -- one per game x method, over that game's record runs (it waits for them).

Everything is checked before any job starts (the file's keys, each agent loaded and matched to its
game, methods, devices, the Ray cluster). Jobs run as Ray tasks (``ray.init()`` locally, or an
existing cluster with ``address``) with ``cpus_per_job`` / ``gpus_per_job`` resources each; without
Ray (or with ``--serial``) the same jobs run one after the other in this process, with the same
outputs. A job's folder is named by a hash of what determines its result (the agent files' SHA-256,
the game, seed, method and options): a job whose folder holds a finished ``sweep_job.json`` with that
hash is skipped, so a stopped sweep resumes where it was, and a changed option runs anew in a new
folder. A failing job is reported with its error and the others go on. ``sweep.csv`` (one row per
job, rewritten as each ends) and ``report.html`` gather the results.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlexplain import envs, runs
from rlexplain.catalog import BASELINES, DEFAULT_METHOD, METHOD_NAMES
from rlexplain.devices import check_name, resolve_device
from rlexplain.errors import RLExplainError, SweepError, one_line
from rlexplain.files import ensure_writable_dir, write_atomically, write_json_atomically

JOB_KINDS = ("record", "evaluate", "compare", "strategies")
#: The first columns of ``sweep.csv``; the jobs' headline figures follow.
CSV_COLUMNS = ["job", "agent", "game", "seed", "method", "status", "output", "timesteps", "seconds", "error"]
#: The file that marks a finished job in its folder (with the job's hash and headline figures).
JOB_FILE = "sweep_job.json"
#: Options the sweep itself sets for every job (not accepted among a job's options).
_SET_BY_SWEEP = {"seed", "composite", "methods", "device", "tf32", "progress", "threads"}


def job_options(kind: str) -> tuple[str, ...]:
    """The options a job of ``kind`` accepts in a sweep (its command's own options, less what the sweep sets)."""
    if kind == "record":
        from rlexplain.record import RecordOptions

        names = [f.name for f in dataclasses.fields(RecordOptions)]
    elif kind == "evaluate":
        from rlexplain.evaluate import EvaluateOptions

        names = [f.name for f in dataclasses.fields(EvaluateOptions)]
    elif kind == "compare":
        from rlexplain.compare import compare

        names = [p for p, v in inspect.signature(compare).parameters.items() if v.kind is v.KEYWORD_ONLY]
        names = [n for n in names if n not in ("out", "states", "force")]
    else:
        from rlexplain.strategies import StrategyOptions

        names = [f.name for f in dataclasses.fields(StrategyOptions)] + ["videos"]
    return tuple(n for n in names if n not in _SET_BY_SWEEP)


# -- the description ---------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    """What to run (see the module docstring for the YAML form).

    :ivar agents: SB3 zips, checkpoint folders (all their ``rl_model_*_steps.zip``), rl-zoo run
        folders, ``hf:ORG/REPO`` or bundled names (``breakout-dqn@500k``).
    :ivar games: games to play; empty: each agent's own. An agent of another game is refused.
    :ivar seeds: seeds of the record and evaluate jobs (and of compare's states and games).
    :ivar methods: explanation methods (record, compare and strategies jobs: one each; evaluate: all of them).
    :ivar jobs: job kind -> its options (``{"record": {"max_steps": 500}}``).
    :ivar out: the sweep's folder (jobs in ``out/<kind>/...``, ``sweep.csv``, ``report.html``).
    :ivar device: where explanations run (``cpu``, ``cuda``, ``auto``). :ivar tf32: allow TF32 on CUDA.
    :ivar cpus_per_job: CPUs each Ray task reserves (and torch threads per job).
    :ivar gpus_per_job: GPUs each Ray task reserves (fractions share a GPU); default 1 with
        ``device: cuda``, else 0 (Ray hides GPUs from tasks that reserve none).
    """

    agents: list[str]
    games: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    methods: list[str] = field(default_factory=lambda: [DEFAULT_METHOD])
    jobs: dict[str, dict] = field(default_factory=lambda: {"record": {}})
    out: str | None = None
    device: str = "cpu"
    tf32: bool = False
    cpus_per_job: int = 1
    gpus_per_job: float | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SweepSpec:
        """Read a sweep file; ``overrides`` (command-line options) replace its values when not None."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError as exc:
            raise SweepError(f"sweep file not found: {path}") from exc
        except yaml.YAMLError as exc:
            raise SweepError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise SweepError(f"{path} must be a mapping with agents, games, seeds, methods, jobs, out; "
                             f"got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: dict, source: str = "the sweep") -> SweepSpec:
        """Build and check a spec from plain data (a parsed YAML file, or command-line values)."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in known]
        if unknown:
            raise SweepError(f"unknown key {unknown[0]!r} in {source}: expected {', '.join(known)}")
        values = dict(data)
        for key in ("agents", "games", "seeds", "methods"):
            if key in values and not isinstance(values[key], list):
                values[key] = [values[key]] if values[key] is not None else []
        jobs = values.get("jobs", ["record"])
        if isinstance(jobs, str):
            jobs = [j.strip() for j in jobs.split(",") if j.strip()]
        if isinstance(jobs, list):
            jobs = {j: {} for j in jobs}
        if not isinstance(jobs, dict):
            raise SweepError(f"jobs in {source} must be a list of {', '.join(JOB_KINDS)} or a mapping of them to "
                             f"their options")
        values["jobs"] = {k: dict(v or {}) for k, v in jobs.items()}
        spec = cls(**values)
        spec.check(source)
        return spec

    def check(self, source: str = "the sweep") -> None:
        """Raise :class:`SweepError` naming the first bad value (nothing is loaded or run yet)."""
        if not self.agents:
            raise SweepError(f"{source} names no agents: give agents (zips, checkpoint folders, hf:ORG/REPO, "
                             f"bundled names)")
        if not self.jobs:
            raise SweepError(f"{source} names no jobs: choose some of {', '.join(JOB_KINDS)}")
        for kind, options in self.jobs.items():
            if kind not in JOB_KINDS:
                raise SweepError(f"unknown job {kind!r} in {source}: expected {', '.join(JOB_KINDS)}")
            allowed = job_options(kind)
            bad = [k for k in options if k not in allowed]
            if bad:
                why = " (the sweep sets it)" if bad[0] in _SET_BY_SWEEP else ""
                raise SweepError(f"unknown option {bad[0]!r} for {kind} jobs in {source}{why}: expected "
                                 f"{', '.join(allowed)}")
        if "strategies" in self.jobs and "record" not in self.jobs:
            raise SweepError(f"strategies jobs need record jobs (their maps) in {source}: add record to jobs")
        unknown = [m for m in self.methods if m not in METHOD_NAMES]
        if unknown or not self.methods:
            raise SweepError(f"unknown method {unknown[0] if unknown else '(none)'!r} in {source}: expected "
                             f"{', '.join(METHOD_NAMES)}")
        baselines = [m for m in self.methods if m in BASELINES]
        explaining = [k for k in self.jobs if k != "evaluate"]
        if baselines and explaining:
            raise SweepError(f"method {baselines[0]} is an evaluation baseline: {explaining[0]} jobs refuse it; "
                             f"keep it for evaluate-only sweeps")
        if not self.seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in self.seeds):
            raise SweepError(f"seeds in {source} must be non-negative integers, got {self.seeds}")
        if not self.out:
            raise SweepError("give the sweep's folder (--out DIR, or out: in the sweep file): a sweep resumes there")
        if self.cpus_per_job < 1:
            raise SweepError(f"cpus_per_job must be at least 1, got {self.cpus_per_job}")
        check_name(self.device)  # whether it exists is checked where the jobs run (a cluster's GPUs are elsewhere)
        if self.gpus_per_job is not None and self.gpus_per_job < 0:
            raise SweepError(f"gpus_per_job must be >= 0, got {self.gpus_per_job}")

    @property
    def gpus(self) -> float:
        if self.gpus_per_job is not None:
            return float(self.gpus_per_job)
        return 1.0 if str(self.device).startswith("cuda") else 0.0


@dataclass
class Job:
    """One unit of work: what to run, where its output goes, and the hash that names it."""

    kind: str
    game: str                                    # env id
    seed: int | None
    method: str
    agents: list[str]                            # agent files (one, or a series for compare)
    labels: list[str]
    timesteps: list[int | None]
    options: dict
    key: str = ""
    folder: str = ""                             # the job's folder inside the sweep's, e.g. record/Breakout-...
    output: str = ""                             # the same, absolute (what the job writes to)
    needs: list[str] = field(default_factory=list)  # keys of the record jobs a strategies job reads

    def row(self) -> dict:
        """The job's first columns in ``sweep.csv``, before it has run."""
        single = len(self.agents) == 1
        return {"job": self.kind, "agent": self.labels[0] if single else f"{len(self.labels)} agents",
                "game": envs.game_name(self.game), "seed": "" if self.seed is None else self.seed,
                "method": self.method, "status": "pending", "output": self.folder,
                "timesteps": self.timesteps[0] if single and self.timesteps[0] is not None else ""}


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def expand_agents(specs: Sequence[str]) -> list[str]:
    """Agent specs -> one spec per agent: a folder with ``rl_model_*_steps.zip`` gives each of them."""
    from rlexplain.agents import checkpoint_series, hub

    out: list[str] = []
    for spec in specs:
        p = Path(str(spec))
        if not hub.is_hub_spec(spec) and p.is_dir() and checkpoint_series(p):
            out += [str(c) for c in checkpoint_series(p)]
        else:
            out.append(str(spec))
    return list(dict.fromkeys(out))


def plan(spec: SweepSpec) -> list[Job]:
    """Load every agent (one-line errors for missing, corrupt or other-game agents), match agents to
    games, and list the jobs in a fixed order, each with its hash and output folder."""
    from rlexplain.agents import load_agent
    from rlexplain.compare import checkpoint_steps

    games = [envs.resolve_env_id(g) for g in spec.games]
    agents: dict[str, list[tuple[str, str, int | None, str]]] = {}  # env id -> (file, label, steps, sha256)
    for agent_spec in expand_agents(spec.agents):
        try:
            agent = load_agent(agent_spec)
        except RLExplainError as exc:
            raise SweepError(f"agent {agent_spec}: {exc}") from exc
        own = agent.env_id
        if own is not None and games and own not in games:
            raise SweepError(f"agent {agent_spec} plays {envs.game_name(own)}, which is not among the sweep's games "
                             f"({', '.join(envs.game_name(g) for g in games)}): add {envs.game_name(own)} or "
                             f"remove the agent")
        targets = [own] if own is not None else games
        sha = agent.sha256  # (reads the whole file: once per agent)
        steps = agent.timesteps
        if steps is None and agent.path is not None:
            with contextlib.suppress(RLExplainError):
                steps = checkpoint_steps(agent.path)
        if not targets:
            raise SweepError(f"agent {agent_spec} does not say which game it plays: list its game under games")
        for game in targets:
            if game != own:  # (load_agent has checked it against its own game)
                try:
                    agent.make_env(game, max_episode_steps=None).close()  # its observations and actions fit
                except RLExplainError as exc:
                    raise SweepError(f"agent {agent_spec} does not fit {envs.game_name(game)}: {exc}") from exc
            series = agents.setdefault(game, [])
            if all(known != sha for *_, known in series):  # the same file named twice is one agent
                series.append((str(Path(agent.path).resolve()), agent.name, steps, sha))
    for game in games:
        if game not in agents:
            raise SweepError(f"no agent of the sweep plays {envs.game_name(game)}: add one or remove the game")
    jobs: list[Job] = []
    for game, series in agents.items():
        series.sort(key=lambda a: (a[2] is None, a[2] or 0, a[1]))
        for path, label, steps, sha in series:
            for seed in spec.seeds:
                if "record" in spec.jobs:
                    for method in spec.methods:
                        jobs.append(_job(spec, "record", game, seed, method, [(path, label, steps, sha)]))
                if "evaluate" in spec.jobs:
                    jobs.append(_job(spec, "evaluate", game, seed, ",".join(spec.methods),
                                     [(path, label, steps, sha)]))
        if "compare" in spec.jobs:
            for seed in spec.seeds:
                for method in spec.methods:
                    jobs.append(_job(spec, "compare", game, seed, method, series))
        if "strategies" in spec.jobs:
            for method in spec.methods:
                needs = [j for j in jobs if j.kind == "record" and j.game == game and j.method == method]
                job = _job(spec, "strategies", game, None, method, series, needs=[j.key for j in needs])
                jobs.append(job)
    return jobs


def _job(spec: SweepSpec, kind: str, game: str, seed: int | None, method: str,
         agents: list[tuple[str, str, int | None, str]], needs: Sequence[str] = ()) -> Job:
    options = dict(spec.jobs[kind])
    key = _fingerprint(kind, game, seed, method, [a[3] for a in agents], options, list(needs))
    label = agents[0][1] if len(agents) == 1 else f"{len(agents)}agents"
    name = "-".join(str(p) for p in (envs.game_name(game), label if kind in ("record", "evaluate") else None,
                                     f"s{seed}" if seed is not None else None, method.replace(",", "+")[:60],
                                     key[:10]) if p)
    safe = runs.safe_name(name)
    return Job(kind, game, seed, method, [a[0] for a in agents], [a[1] for a in agents], [a[2] for a in agents],
               options, key, f"{kind}/{safe}", str(Path(spec.out).resolve() / kind / safe), list(needs))


# -- running one job ---------------------------------------------------------------------------------
def finished(job: Job) -> dict | None:
    """The ``sweep_job.json`` of a job that finished with this very hash, else None."""
    try:
        data = json.loads((Path(job.output) / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("key") == job.key and data.get("status") == "complete" \
        else None


def run_job(job: dict, device: str = "cpu", tf32: bool = False, threads: int = 1,
            inputs: Sequence[str] = ()) -> dict:
    """Run one job (a :class:`Job` as a dict) in this process: its command through the Python API, its
    figures, then ``sweep_job.json``. Never raises for the job's own errors: they are returned.

    :param inputs: for strategies jobs, the record run folders to read.
    :returns: ``status`` (complete / failed), ``seconds``, ``error`` and the headline figures.
    """
    import torch

    started = time.perf_counter()
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    out = Path(job["output"])
    force = out.is_dir() and any(out.iterdir())  # an unfinished earlier try: replaced (rlexplain outputs only)
    try:
        headline = _RUNNERS[job["kind"]](job, out, force, device, tf32, list(inputs))
    except (RLExplainError, OSError) as exc:
        return {"status": "failed", "error": one_line(exc), "seconds": time.perf_counter() - started}
    except Exception as exc:  # noqa: BLE001 -- a bug in one job must not stop the others; reported with its type
        return {"status": "failed", "error": f"{type(exc).__name__}: {one_line(exc)}",
                "seconds": time.perf_counter() - started}
    finally:
        torch.set_num_threads(previous)
    result = {"status": "complete", "seconds": time.perf_counter() - started, "headline": headline}
    write_json_atomically(out / JOB_FILE, {"key": job["key"], "job": job, **result,
                                           "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return result


def _run_record(job: dict, out: Path, force: bool, device: str, tf32: bool, inputs: list[str]) -> dict:
    from rlexplain.record import RecordOptions, record
    from rlexplain.report.plots import plot_run

    options = RecordOptions(**{"progress": False, **job["options"]}, seed=job["seed"], composite=job["method"],
                            device=device, tf32=tf32)
    result = record(job["game"], job["agents"][0], options, out=out, force=force,
                    command=["rlexplain", "sweep", job["kind"], job["key"]])
    plot_run(result.run_dir)
    means = result.summary.get("means", {})
    return {"return": result.summary.get("mean_return"), "steps": result.summary.get("steps"),
            **{k: v for k, v in means.items() if k.startswith(("share_", "density_")) or k == "entropy"}}


def _run_evaluate(job: dict, out: Path, force: bool, device: str, tf32: bool, inputs: list[str]) -> dict:
    from rlexplain.evaluate import EvaluateOptions, evaluate
    from rlexplain.report import evaluate_report

    options = EvaluateOptions(**{"progress": False, **job["options"]}, methods=job["method"].split(","),
                              seed=job["seed"], device=device, tf32=tf32)
    result = evaluate(job["agents"][0], job["game"], options, out=out, force=force,
                      command=["rlexplain", "sweep", job["kind"], job["key"]])
    evaluate_report.write(result)
    headline: dict[str, Any] = {}
    for row in result.rows:
        headline[f"abc_{row['method']}"] = row["abc"]
        headline[f"sanity_{row['method']}"] = row["sanity"]
    return headline


def _run_compare(job: dict, out: Path, force: bool, device: str, tf32: bool, inputs: list[str]) -> dict:
    from rlexplain.compare import compare
    from rlexplain.report import compare_report

    options = {"progress": False, **job["options"]}
    result = compare(job["game"], job["agents"], out=out, seed=job["seed"], composite=job["method"], force=force,
                     device=device, tf32=tf32, **options)
    compare_report.write(result, video=False)
    last = result.rows[-1]
    return {"checkpoints": len(result.rows), "return": last["mean_return"],
            "similarity_first_last": float(result.similarity[0, -1])}


def _run_strategies(job: dict, out: Path, force: bool, device: str, tf32: bool, inputs: list[str]) -> dict:
    from rlexplain.report import strategies_report
    from rlexplain.strategies import StrategyOptions, strategies

    options = dict(job["options"])
    videos = bool(options.pop("videos", False))
    if options.get("k") == "auto":
        options["k"] = None
    result = strategies(inputs, StrategyOptions(**options, device=device, tf32=tf32), out=out, force=force,
                        command=["rlexplain", "sweep", job["kind"], job["key"]])
    strategies_report.write(result, videos=videos)
    return {"k": result.spectral.k, "maps": int(len(result.spectral.labels)),
            **{f"strategy_{c['cluster']}": f"{c['share']:.1%} {c['label']}" for c in result.clusters}}


_RUNNERS = {"record": _run_record, "evaluate": _run_evaluate, "compare": _run_compare,
            "strategies": _run_strategies}


# -- running a sweep ---------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """The sweep's folder, its jobs and one row per job (as in ``sweep.csv``)."""

    out: Path
    jobs: list[Job]
    rows: list[dict]
    backend: str

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        """How many jobs have each status."""
        return status_counts(self.rows)

    def table(self) -> str:
        """Jobs and statuses as aligned text (failures with their errors)."""
        counts = self.counts()
        lines = [f"{len(self.rows)} jobs ({self.backend}): " + ", ".join(f"{n} {s}" for s, n in counts.items())]
        for r in self.rows:
            if r["status"] == "failed":
                lines.append(f"  failed: {r['job']} {r['agent']} {r['game']} seed {r['seed']}: {r['error']}")
        return "\n".join(lines)


def sweep(spec: SweepSpec, *, backend: str = "auto", address: str | None = None, ray_cpus: int | None = None,
          progress: bool = True) -> SweepResult:
    """Run a sweep (see the module docstring) and write ``sweep.csv`` and ``report.html`` into ``spec.out``.

    :param backend: ``ray`` (Ray tasks; local unless ``address``), ``serial`` (this process), or
        ``auto``: Ray when it is installed or ``address`` is given, else serial.
    :param address: an existing Ray cluster (``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``).
    :param ray_cpus: CPUs of the local Ray cluster the sweep starts (default: all).
    :returns: the jobs and their rows; failed jobs are listed in ``failed`` (the sweep itself does not raise for them).
    """
    if backend not in ("auto", "ray", "serial"):
        raise SweepError(f"unknown backend {backend!r}: expected ray, serial or auto")
    if backend == "serial" and address:
        raise SweepError("--address names a Ray cluster; it cannot be used with --serial")
    use_ray = backend == "ray" or (backend == "auto" and (address is not None or _ray_installed()))
    if use_ray:
        _require_ray()
        if address:
            _check_reachable(address)
    if not address:
        resolve_device(spec.device)  # the jobs run on this machine: its device must exist here
    runner = _RayRunner(spec, address, ray_cpus) if use_ray else _SerialRunner(spec)
    # Ray starts, and its workers import rlexplain, while the agents load; ray.init sets its own SIGTERM handler
    # (sys.exit), so ours is installed after it: SIGTERM/SIGHUP mark unfinished jobs interrupted and stop the tasks
    with runner, runs.signals_interrupt():
        jobs = plan(spec)
        out = _prepare_out(Path(spec.out))
        rows = {j.key: j.row() for j in jobs}
        todo = []
        for job in jobs:
            done = finished(job)
            if done is not None:
                rows[job.key].update(status="skipped", seconds=done.get("seconds", ""),
                                     **(done.get("headline") or {}))
            else:
                todo.append(job)
        _write_csv(out, jobs, rows)
        try:
            _run_stages(runner, todo, jobs, rows, out, progress)
        except BaseException:
            for row in rows.values():
                if row["status"] in ("pending", "queued"):
                    row["status"] = "interrupted"
            with runs.signals_deferred():
                _write_csv(out, jobs, rows)
            raise
    result = SweepResult(out, jobs, list(rows.values()), runner.name)
    from rlexplain.report import sweep_report

    sweep_report.write(result)
    return result


def _run_stages(runner: _SerialRunner | _RayRunner, todo: list[Job], jobs: list[Job], rows: dict[str, dict],
                out: Path, progress: bool) -> None:
    """Run the unfinished jobs: record, evaluate and compare first, then strategies (which read the records),
    updating the rows and ``sweep.csv`` as each job ends."""
    from tqdm.auto import tqdm

    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="sweep", unit="job", disable=not progress,
              dynamic_ncols=True) as bar:
        for stage in (("record", "evaluate", "compare"), ("strategies",)):
            batch = []
            for job in (j for j in todo if j.kind in stage):
                missing = [k for k in job.needs if rows[k]["status"] not in ("complete", "skipped")]
                if missing:
                    rows[job.key].update(status="not run", error=f"{len(missing)} record job(s) it reads failed")
                    bar.update(1)
                    continue
                rows[job.key]["status"] = "queued"
                batch.append((job, [str(out / rows[k]["output"]) for k in job.needs]))
            _write_csv(out, jobs, rows)
            for job, outcome in runner.run(batch):
                rows[job.key].update(status=outcome["status"], seconds=round(outcome.get("seconds", 0), 2),
                                     error=outcome.get("error", ""), **(outcome.get("headline") or {}))
                _write_csv(out, jobs, rows)
                bar.update(1)
                bar.set_postfix_str(_counts(rows.values()), refresh=False)


def _prepare_out(out: Path) -> Path:
    """The sweep's folder: created, or an earlier sweep's (resumed); never emptied."""
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out} exists and is not a folder; choose another --out")
    try:
        ensure_writable_dir(out)
    except OSError as exc:
        raise SweepError(f"cannot write to the sweep folder {out} ({exc.strerror}); choose a writable --out") from exc
    return out


def status_counts(rows) -> dict[str, int]:
    """How many jobs have each status, in order of first appearance."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def _counts(rows) -> str:
    return ", ".join(f"{n} {s}" for s, n in status_counts(rows).items() if s not in ("pending", "queued"))


def _write_csv(out: Path, jobs: list[Job], rows: dict[str, dict]) -> None:
    extra = list(dict.fromkeys(k for r in rows.values() for k in r if k not in CSV_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS + extra, extrasaction="ignore")
    writer.writeheader()
    for job in jobs:
        row = rows[job.key]
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomically(out / "sweep.csv", buffer.getvalue().encode())


class _SerialRunner:
    """Jobs one after the other in this process."""

    name = "serial"

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def __enter__(self) -> _SerialRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, batch: list[tuple[Job, list[str]]]) -> Iterator[tuple[Job, dict]]:
        for job, inputs in batch:
            yield job, run_job(dataclasses.asdict(job), self.spec.device, self.spec.tf32, self.spec.cpus_per_job,
                               inputs)


class _RayRunner:
    """Jobs as Ray tasks, each reserving ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs; results as they finish."""

    name = "ray"

    def __init__(self, spec: SweepSpec, address: str | None, ray_cpus: int | None) -> None:
        self.spec, self.address, self.ray_cpus = spec, address, ray_cpus
        self._started = False
        self._pending: list = []
        self._warming: list = []

    def __enter__(self) -> _RayRunner:
        import ray

        if not ray.is_initialized():
            try:
                ray.init(address=self.address, num_cpus=None if self.address else self.ray_cpus,
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                         configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local cluster"
                raise SweepError(f"cannot start Ray on {where} ({one_line(exc)}); check --address, or run "
                                 f"with --serial") from exc
            self._started = True
        resources = ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
        self.name = f"ray, {int(cpus)} CPUs" + (f", {gpus:g} GPUs" if gpus else "")
        # a task asking for more than the cluster has would wait forever: refuse it now
        if self.spec.cpus_per_job > cpus or self.spec.gpus > gpus:
            self.__exit__()
            need = f"{self.spec.cpus_per_job} CPUs" if self.spec.cpus_per_job > cpus else f"{self.spec.gpus:g} GPUs"
            raise SweepError(f"each job reserves {need} but the Ray cluster has {int(cpus)} CPUs and {gpus:g} GPUs: "
                             f"lower cpus_per_job / gpus_per_job, use --device cpu, or join a larger cluster")
        # every worker imports the commands while the driver loads the agents (refs kept: none is cancelled)
        slots = int(cpus // self.spec.cpus_per_job)
        self._warming = [ray.remote(_warm_up).options(num_cpus=self.spec.cpus_per_job).remote()
                         for _ in range(min(slots, 64))]
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        for ref in self._pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if self._started:
            ray.shutdown()

    def run(self, batch: list[tuple[Job, list[str]]]) -> Iterator[tuple[Job, dict]]:
        import ray

        task = ray.remote(run_job).options(num_cpus=self.spec.cpus_per_job, num_gpus=self.spec.gpus,
                                           max_retries=0)
        refs = {task.remote(dataclasses.asdict(job), self.spec.device, self.spec.tf32, self.spec.cpus_per_job,
                            inputs): job for job, inputs in batch}
        self._pending = list(refs)
        while self._pending:
            ready, self._pending = ray.wait(self._pending, num_returns=1)
            job = refs[ready[0]]
            try:
                outcome = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 -- a task that died (worker crash, out of memory)
                outcome = {"status": "failed", "error": f"Ray task died: {one_line(exc)}"}
            yield job, outcome


def _warm_up() -> None:
    """A Ray worker's first task: import what every job needs (torch, SB3, the commands, matplotlib)."""
    import rlexplain.compare
    import rlexplain.evaluate
    import rlexplain.record
    import rlexplain.report.compare_report
    import rlexplain.report.evaluate_report
    import rlexplain.report.plots
    import rlexplain.report.strategies_report
    import rlexplain.strategies  # noqa: F401


def _ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _require_ray() -> None:
    if not _ray_installed():
        raise SweepError("Ray is not installed: pip install 'rlexplain[ray]', or run the sweep with --serial")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, before any job, when a Ray cluster's address does not answer."""
    if address == "auto":
        return  # ray.init(address="auto") finds a local cluster itself and says so when there is none
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SweepError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                         f"`ray start --head`, check the address, or run with --serial") from exc
