"""The ``rlexplain`` command line: a thin layer over the Python API.

    rlexplain record --env Breakout [--agent breakout-dqn@100k] [--max-steps 500] ...
    rlexplain stats RUN_DIR
    rlexplain compare --env Breakout [CKPT ...] [--out DIR]
    rlexplain evaluate --agent breakout-dqn
    rlexplain strategies RUN_DIR ...
    rlexplain sweep SWEEP.yaml | --agents PATH ... --jobs record,evaluate --out DIR
    rlexplain agents
    rlexplain games
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from rlexplain.catalog import DEFAULT_METHOD
from rlexplain.catalog import METHOD_NAMES as METHODS
from rlexplain.errors import RLExplainError, one_line


def _record(args: argparse.Namespace) -> int:
    from rlexplain.record import RecordOptions, record

    options = RecordOptions(episodes=args.episodes, max_steps=args.max_steps, seed=args.seed, composite=args.composite,
                            action=args.action, deterministic=args.deterministic, fps=args.fps, gif=args.gif,
                            show_frames=args.frames, boxes=args.boxes, video=not args.no_video,
                            maps=not args.no_maps, progress=not args.quiet, n_envs=args.n_envs,
                            device=args.device, tf32=args.tf32)
    result = record(args.env, args.agent, options, out=args.out, force=args.force,
                    command=["rlexplain", *sys.argv[1:]])
    if not args.no_plots:
        from rlexplain.report.plots import plot_run

        plot_run(result.run_dir)
    s = result.summary
    for e in s["episodes"]:
        print(f"episode {e['episode']}: return {e['return']:g} in {e['length']} steps ({e.get('end', e['status'])})")
    shares = {k[len("share_"):]: v for k, v in s["means"].items() if k.startswith("share_")}
    if shares:
        print("mean share of positive relevance: " + ", ".join(f"{k} {v:.3f}" for k, v in shares.items()))
    print(f"run folder: {result.run_dir}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from rlexplain import runs
    from rlexplain.report.plots import plot_run, summary_table

    summary = runs.read_summary(args.run_dir)
    if args.repair:
        summary = runs.repair(args.run_dir)
        counts = ", ".join(f"episode {e['episode']}: {e['rows']} rows, {e['map_steps']} map steps, "
                           f"{e['video_frames']} video frames" for e in summary["episodes"])
        print(f"repaired {args.run_dir}: status {summary['status']}; {counts or 'no steps'}")
    elif runs.ended_without_closing(args.run_dir, summary):
        print(f"rlexplain: {args.run_dir} ended without closing (killed, or the machine stopped); "
              f"`rlexplain stats --repair {args.run_dir}` rebuilds its summary from the files", file=sys.stderr)
    out = plot_run(args.run_dir)
    print(summary_table(args.run_dir))
    print(f"plots: {out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from rlexplain.compare import compare
    from rlexplain.report import compare_report

    result = compare(args.env, args.checkpoints or None, out=args.out, states=args.states, n_states=args.n_states,
                     games=args.games, max_steps=args.max_steps, seed=args.seed, composite=args.composite,
                     reference=args.reference, force=args.force, progress=not args.quiet, device=args.device,
                     tf32=args.tf32)
    page = compare_report.write(result, video=not args.no_video)
    print(result.table())
    print(f"report: {page}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from rlexplain.evaluate import DEFAULT_METHODS, EvaluateOptions, evaluate
    from rlexplain.report import evaluate_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else list(DEFAULT_METHODS)
    options = EvaluateOptions(methods=methods, n_states=args.n_states, region=args.region, steps=args.steps,
                              replace=args.replace, seed=args.seed, n_sanity=args.n_sanity, progress=not args.quiet,
                              device=args.device, tf32=args.tf32)
    result = evaluate(args.agent, args.env, options, states=args.states, out=args.out, force=args.force,
                      command=["rlexplain", *sys.argv[1:]])
    evaluate_report.write(result)
    print(result.table())
    print(f"output folder: {result.out}")
    return 0


def _strategies(args: argparse.Namespace) -> int:
    from rlexplain.report import strategies_report
    from rlexplain.strategies import StrategyOptions, strategies

    k = None if args.k == "auto" else int(args.k)
    result = strategies(args.run_dirs, StrategyOptions(k=k, seed=args.seed, device=args.device, tf32=args.tf32),
                        out=args.out, force=args.force,
                        command=["rlexplain", *sys.argv[1:]])
    page = strategies_report.write(result, videos=not args.no_video)
    for c in result.clusters:
        print(f"strategy {c['cluster']}: {c['share']:6.1%}  {c['label']}  (then reward {c['follows']['reward_within_30']:.0%}"
              f", life lost {c['follows']['life_lost_within_30']:.0%} within 30 steps)")
    if args.virelay:
        print(f"ViRelAy project: {strategies_report.export_virelay(result)}")
    print(f"report: {page}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from rlexplain.errors import SweepError
    from rlexplain.sweep import SweepSpec, job_options, sweep

    given = {"agents": args.agents, "games": args.games, "seeds": args.seeds, "out": args.out, "device": args.device,
             "cpus_per_job": args.cpus_per_job, "gpus_per_job": args.gpus_per_job,
             "methods": [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None,
             "jobs": [j.strip() for j in args.jobs.split(",") if j.strip()] if args.jobs else None,
             "tf32": True if args.tf32 else None}
    if args.file:
        spec = SweepSpec.from_yaml(args.file, **given)
    else:
        if not args.agents:
            raise SweepError("give a sweep file (rlexplain sweep SWEEP.yaml) or --agents PATH ...")
        spec = SweepSpec.from_mapping({k: v for k, v in given.items() if v is not None}, source="the command line")
    if args.max_steps is not None:
        for kind, options in spec.jobs.items():
            if "max_steps" in job_options(kind):
                options["max_steps"] = args.max_steps
        spec.check()
    backend = "ray" if args.ray else "serial" if args.serial else "auto"
    result = sweep(spec, backend=backend, address=args.address, ray_cpus=args.ray_cpus, progress=not args.quiet)
    print(result.table())
    print(f"sweep.csv: {result.out / 'sweep.csv'}")
    print(f"report: {result.out / 'report.html'}")
    return 1 if result.failed else 0


def _view(args: argparse.Namespace) -> int:
    from rlexplain.report import viewer

    page = viewer.write(args.run_dir)
    print(f"viewer: {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser)")
    if args.open:
        import webbrowser

        webbrowser.open(page.resolve().as_uri())
    return 0


def _agents(args: argparse.Namespace) -> int:
    from rlexplain.agents import bundled_agents_dir, list_bundled

    agents = list_bundled()
    if not agents:
        print(f"no bundled agents in {bundled_agents_dir()}")
    for agent in agents:
        print(f"{agent['name']}  ({agent['algorithm']}, {agent['env_id']})")
        for c in agent["checkpoints"]:
            ret = "" if c["mean_return"] is None else f"return {c['mean_return']:.1f} over {c['games']} games " \
                                                      f"(random {c['random_mean_return']:.1f})"
            print(f"  @{c['timesteps']:<9d} {ret}")
    return 0


def _games(args: argparse.Namespace) -> int:
    from rlexplain import envs
    from rlexplain.agents import hub, list_bundled

    bundled: dict[str, list[str]] = {}
    for agent in list_bundled():
        if agent["env_id"]:
            bundled.setdefault(envs.game_name(agent["env_id"]), []).append(agent["name"])
    games = envs.atari_games()
    print(f"{len(games)} ALE games (--env NAME); * = a bundled agent, hf: = the RL Zoo's agents on the Hugging Face Hub")
    width = max(len(g) for g in games)
    for game in games:
        agents = list(bundled.get(game, []))
        repos = hub.hub_repos(game)
        if repos:
            others = ", ".join(r.split("/")[1].split("-")[0] for r in repos[1:])
            agents.append(f"hf:{repos[0]} (or {others})")
        if agents or args.all:
            mark = "*" if game in bundled else " "
            print(f"{mark} {game:<{width}s}  {'  '.join(f'--agent {a}' for a in agents)}".rstrip())
    if not args.all:
        print("(games without a known agent are left out: --all lists them; any SB3 agent of theirs works with --agent)")
    return 0


def _device_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", help="where explanations run: cpu (default), cuda, cuda:N, or auto "
                                                        "(a GPU where torch sees one)")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 on CUDA (off by default: float32 as on the CPU)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlexplain", description="LRP for trained Atari RL agents (SB3, rl-zoo).")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("record", help="play and record gameplay with LRP heatmaps and per-step statistics")
    r.add_argument("--env", help="game name or NoFrameskip-v4 id (default: the agent's own game)")
    r.add_argument("--agent", help="SB3 .zip, rl-zoo run folder, hf:ORG/REPO (Hugging Face Hub), or bundled name "
                                   "(default: the game's bundled agent)")
    r.add_argument("--episodes", type=int, default=1, help="full games to play (default 1)")
    r.add_argument("--max-steps", type=int, default=27_000, help="agent steps per game at most (default 27000: "
                                                                   "30 minutes of play)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--n-envs", type=int, default=1, help="games played side by side, explained in one batch per "
                                                         "step (default 1); each game as if recorded alone")
    r.add_argument("--composite", default=DEFAULT_METHOD, choices=METHODS)
    r.add_argument("--action", default="chosen", help="chosen | all | contrastive | <action index or name>")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                   help="greedy actions (default)")
    g.add_argument("--stochastic", dest="deterministic", action="store_false",
                   help="sample the policy (PPO/A2C) or epsilon-greedy 0.01 (DQN)")
    r.add_argument("--fps", type=int, default=15, help="video frame rate (15 = real time)")
    r.add_argument("--gif", action="store_true", help="also write a GIF")
    r.add_argument("--frames", action="store_true", help="show the four stacked input frames with their relevance")
    r.add_argument("--boxes", action="store_true", help="outline the objects read from RAM")
    r.add_argument("--no-video", action="store_true", help="statistics and maps only")
    r.add_argument("--no-maps", action="store_true", help="store no maps (statistics, video, summary only)")
    r.add_argument("--no-plots", action="store_true", help="skip plots/ (draw them later with `rlexplain stats`)")
    r.add_argument("--out", help="run folder (default runs/<Game>-<agent>-<method>-<target>-<time>/)")
    r.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _device_options(r)
    r.set_defaults(func=_record)

    s = sub.add_parser("stats", help="plots and summary table of a recorded run, from its files")
    s.add_argument("run_dir")
    s.add_argument("--repair", action="store_true",
                   help="finalise the summary of a run that ended without closing, from its files")
    s.set_defaults(func=_stats)

    c = sub.add_parser("compare", help="compare checkpoints on the same states")
    c.add_argument("--env", default=None, help="game (default: the checkpoints' own)")
    c.add_argument("checkpoints", nargs="*", help="checkpoint zips, folders of rl_model_*_steps.zip, rl-zoo runs "
                                                  "(default: the bundled series of the game)")
    c.add_argument("--out", help="output folder (default runs/compare-<Game>-<time>/)")
    c.add_argument("--states", help="reuse a states.npz from an earlier comparison")
    c.add_argument("--n-states", type=int, default=200, help="number of fixed states")
    c.add_argument("--games", type=int, default=2, help="full games per checkpoint for its return")
    c.add_argument("--max-steps", type=int, default=10_000, help="agent steps per game at most")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--composite", default=DEFAULT_METHOD, choices=METHODS)
    c.add_argument("--reference", help="checkpoint whose play collects the states (default: the last)")
    c.add_argument("--force", action="store_true")
    c.add_argument("--no-video", action="store_true", help="no states.mp4")
    c.add_argument("--quiet", action="store_true")
    _device_options(c)
    c.set_defaults(func=_compare)

    e = sub.add_parser("evaluate", help="score explanation methods on an agent: region perturbation, randomisation check")
    e.add_argument("--agent", required=True, help="SB3 .zip, rl-zoo run folder, hf:ORG/REPO, or bundled name")
    e.add_argument("--env", default=None, help="game (default: the agent's own)")
    e.add_argument("--methods", default=None, help="comma-separated methods (default: all, the random baseline too)")
    e.add_argument("--n-states", type=int, default=128, help="states collected by greedy play over whole games")
    e.add_argument("--states", help="reuse a states.npz (from evaluate or compare)")
    e.add_argument("--region", type=int, default=4, help="side of the perturbed square regions, in input pixels")
    e.add_argument("--steps", type=int, default=100, help="regions perturbed per order (K)")
    e.add_argument("--replace", default="blur", choices=("blur", "mean", "noise"),
                   help="what replaces a region (default: the state's own Gaussian blur)")
    e.add_argument("--n-sanity", type=int, default=16, help="states for the model-randomisation check")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", help="output folder (default runs/<Game>-evaluate-<agent>-<time>/)")
    e.add_argument("--force", action="store_true")
    e.add_argument("--quiet", action="store_true")
    _device_options(e)
    e.set_defaults(func=_evaluate)

    st = sub.add_parser("strategies", help="discover recurring strategies in recorded runs' maps (SpRAy)")
    st.add_argument("run_dirs", nargs="+", help="run folders of one game (e.g. one per checkpoint)")
    st.add_argument("--k", default="auto", help="number of strategies, or auto (the eigengap)")
    st.add_argument("--out", help="output folder (default runs/<Game>-strategies-<time>/)")
    st.add_argument("--virelay", action="store_true", help="also export a ViRelAy project (HDF5)")
    st.add_argument("--no-video", action="store_true", help="no strategy or highlight videos")
    st.add_argument("--seed", type=int, default=0)
    st.add_argument("--force", action="store_true")
    _device_options(st)
    st.set_defaults(func=_strategies)

    sw = sub.add_parser("sweep", help="many agents x games x seeds x methods: record/evaluate/compare/strategies jobs "
                                      "on Ray (or serially), resumable, gathered in sweep.csv and report.html")
    sw.add_argument("file", nargs="?", help="a sweep YAML file (agents, games, seeds, methods, jobs, out, ...); the "
                                            "options below override its values")
    sw.add_argument("--agents", nargs="+", help="SB3 zips, checkpoint folders (all their checkpoints), rl-zoo runs, "
                                                "hf:ORG/REPO or bundled names")
    sw.add_argument("--games", nargs="+", help="games to play (default: each agent's own)")
    sw.add_argument("--seeds", nargs="+", type=int, help="seeds (default 0)")
    sw.add_argument("--methods", help=f"comma-separated explanation methods (default {DEFAULT_METHOD})")
    sw.add_argument("--jobs", help="comma-separated: record, evaluate, compare, strategies (default record)")
    sw.add_argument("--max-steps", type=int, help="agent steps per game at most, for every job that plays")
    backend = sw.add_mutually_exclusive_group()
    backend.add_argument("--ray", action="store_true", help="run the jobs as Ray tasks (default when Ray is installed)")
    backend.add_argument("--serial", action="store_true", help="run the jobs one after the other in this process")
    sw.add_argument("--address", help="an existing Ray cluster (HOST:PORT, ray://HOST:PORT or auto); default: start "
                                      "a local one")
    sw.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray cluster (default: all)")
    sw.add_argument("--cpus-per-job", type=int, help="CPUs each job reserves and uses (default 1)")
    sw.add_argument("--gpus-per-job", type=float, help="GPUs each job reserves (default 1 with --device cuda, else 0)")
    sw.add_argument("--out", help="the sweep's folder (a sweep resumes in it)")
    sw.add_argument("--device", default=None, help="where explanations run: cpu (default), cuda, cuda:N or auto")
    sw.add_argument("--tf32", action="store_true", help="allow TF32 on CUDA")
    sw.add_argument("--quiet", action="store_true")
    sw.set_defaults(func=_sweep)

    v = sub.add_parser("view", help="write view.html: explore a recorded run in the browser")
    v.add_argument("run_dir")
    v.add_argument("--open", action="store_true", help="open it in the default browser")
    v.set_defaults(func=_view)

    a = sub.add_parser("agents", help="list the bundled agents")
    a.set_defaults(func=_agents)
    gm = sub.add_parser("games", help="list the ALE games, marking those with a bundled agent or RL Zoo agents on the Hub")
    gm.add_argument("--all", action="store_true", help="also list the games without a known agent")
    gm.set_defaults(func=_games)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into a reader that stopped (e.g. `| head`): not an error
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("rlexplain: interrupted; everything written so far is kept", file=sys.stderr)
        return 130
    except (RLExplainError, OSError) as exc:
        # our errors are one line saying what was wrong and what would be right; anything else is a
        # bug and keeps its traceback
        print(f"rlexplain: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
