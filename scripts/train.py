"""Train an SB3 DQN or PPO agent on an Atari game with rlexplain's env factory.

One file, top to bottom: arguments, env, model, a checkpoint schedule, the loop. The env is
``rlexplain.envs.make_vec_env`` -- the very preprocessing ``rlexplain`` explains with -- and the
hyperparameters are rl-zoo's Atari settings (``hyperparams/dqn.yml``, ``ppo.yml``), with
``total_timesteps`` set to what is really trained so exploration and schedules fit the run.

Checkpoints follow rl-zoo's naming, ``<out>/rl_model_{N}_steps.zip``, each with a JSON model card
``rl_model_{N}_steps.json`` (algorithm, env, preprocessing, steps, seed, hyperparameters, return
over full games and the same games' return for a random policy, the exact command).

    python scripts/train.py --env Breakout --algo dqn --total-timesteps 1400000 \\
        --save-every 100000 --out runs/train/breakout-dqn
    python scripts/train.py ... --resume      # continue from the newest checkpoint in --out
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlexplain import envs  # noqa: E402
from rlexplain.agents import DQN_EPSILON, from_model  # noqa: E402
from rlexplain.agents.checkpoints import algorithm_class, load_model, save_checkpoint, steps_from_name  # noqa: E402
from rlexplain.envs import play_games  # noqa: E402
from rlexplain.runs import versions  # noqa: E402

# rl-zoo's Atari hyperparameters (n_timesteps is replaced by --total-timesteps).
HYPERPARAMS = {
    "dqn": dict(
        buffer_size=100_000, learning_rate=1e-4, batch_size=32, learning_starts=100_000,
        target_update_interval=1000, train_freq=4, gradient_steps=1,
        exploration_fraction=0.1, exploration_final_eps=0.01, optimize_memory_usage=False,
    ),
    "ppo": dict(
        n_steps=128, n_epochs=4, batch_size=256, learning_rate="lin_2.5e-4", clip_range="lin_0.1",
        vf_coef=0.5, ent_coef=0.01,
    ),
}
N_ENVS = {"dqn": 1, "ppo": 8}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="Breakout", help="ALE game name or NoFrameskip-v4 id")
    p.add_argument("--algo", choices=sorted(HYPERPARAMS), default="dqn")
    p.add_argument("--total-timesteps", type=int, required=True, help="steps really trained (schedules use it)")
    p.add_argument("--save-every", type=int, default=100_000, help="checkpoint every N agent steps")
    p.add_argument("--out", type=Path, required=True, help="run folder for checkpoints, cards and logs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: rl-zoo's, 1 DQN / 8 PPO)")
    p.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                   help="override a hyperparameter, e.g. --hp learning_starts=50000 (repeatable)")
    p.add_argument("--light", action="store_true", help="save without optimizer state and DQN target network")
    p.add_argument("--eval-games", type=int, default=10, help="full games per checkpoint for the model card")
    p.add_argument("--eval-max-steps", type=int, default=envs.MAX_EPISODE_STEPS, help="agent steps per eval game")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--refill", type=int, default=None,
                   help="DQN resume: steps collected into the empty replay buffer before learning restarts "
                        "(default: learning_starts)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p.parse_args()


def linear(value: float):
    """rl-zoo's ``lin_<v>``: decays linearly from v to 0 over training."""
    return lambda progress_remaining: progress_remaining * value


def build_hyperparams(args: argparse.Namespace) -> tuple[dict, dict]:
    """(hyperparameters as recorded in the card, the same as SB3 kwargs)."""
    hp = dict(HYPERPARAMS[args.algo])
    for item in args.hp:
        key, _, value = item.partition("=")
        hp[key] = value if value.startswith("lin_") else json.loads(value)
    kwargs = {k: linear(float(v[4:])) if isinstance(v, str) and v.startswith("lin_") else v for k, v in hp.items()}
    return hp, kwargs


def newest_checkpoint(out: Path) -> Path | None:
    found = [(steps_from_name(p), p) for p in out.glob("rl_model_*_steps.zip")]
    found = [f for f in found if f[0] is not None]
    return max(found)[1] if found else None


class Checkpointer:
    """Saves ``rl_model_{N}_steps.zip`` + card whenever training passes the next multiple of ``every``."""

    def __init__(self, args: argparse.Namespace, hp: dict, random_return: list[float], started: float) -> None:
        self.args, self.hp, self.random_return, self.started = args, hp, random_return, started
        self.next_save = 0

    def __call__(self, locals_: dict, globals_: dict) -> bool:
        model = locals_["self"]
        if self.next_save == 0:
            self.next_save = (model.num_timesteps // self.args.save_every + 1) * self.args.save_every
        if model.num_timesteps >= self.next_save:
            self.save(model, self.next_save)
            self.next_save += self.args.save_every
        return True

    def save(self, model, steps: int) -> None:
        args = self.args
        path = save_checkpoint(model, args.out / f"rl_model_{steps}_steps.zip", light=args.light)
        returns = play_games(make_eval_policy(model, args.algo, args.seed), args.env, args.eval_games, seed=10_000,
                             max_episode_steps=args.eval_max_steps)
        card = {
            "algorithm": args.algo,
            "env_id": envs.resolve_env_id(args.env),
            "preprocessing": {
                "wrapper": "stable_baselines3.common.atari_wrappers.AtariWrapper",
                "frame_skip": envs.FRAME_SKIP, "screen_size": envs.SCREEN_SIZE, "frame_stack": envs.FRAME_STACK,
                "noop_max": 30, "terminal_on_life_loss": True, "clip_reward": True,
            },
            "timesteps": steps,
            "num_timesteps": int(model.num_timesteps),
            "total_timesteps": args.total_timesteps,
            "seed": args.seed,
            "hyperparameters": self.hp,
            "light": args.light,
            "evaluation": {
                "games": len(returns), "full_games": True, "fire_on_life_loss": True,
                "max_episode_steps": args.eval_max_steps,
                "policy": f"epsilon-greedy, epsilon={DQN_EPSILON}" if args.algo == "dqn" else "greedy (mode)",
                "seed": 10_000,
                "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns)), "returns": returns,
                "random_mean_return": float(np.mean(self.random_return)), "random_returns": self.random_return,
            },
            "wall_time_s": round(time.time() - self.started, 1),
            "versions": versions(),
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        }
        path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
        print(f"[train] saved {path.name}: return {np.mean(returns):.1f} +- {np.std(returns):.1f} "
              f"over {len(returns)} games (random {np.mean(self.random_return):.1f})", flush=True)


def make_eval_policy(model, algo: str, seed: int):
    """The card's evaluation policy: DQN epsilon-greedy with rlexplain's small fixed epsilon, PPO greedy."""
    agent = from_model(model, algorithm=algo)
    agent.seed(seed)
    return lambda obs: agent.act(obs, deterministic=algo != "dqn")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    hp, kwargs = build_hyperparams(args)
    n_envs = args.n_envs or N_ENVS[args.algo]
    started = time.time()
    resume_from = newest_checkpoint(args.out) if args.resume else None
    start = steps_from_name(resume_from) if resume_from is not None else 0
    # one Monitor log per (re)start, so a resumed run does not overwrite the returns logged before
    venv = envs.make_vec_env(args.env, n_envs, seed=args.seed + start, monitor_dir=str(args.out / "monitor" / f"from_{start}"))
    if resume_from is not None:
        model = load_model(resume_from, env=venv, algo=args.algo, for_training=True)
        model.num_timesteps = start
        if args.algo == "dqn":
            # The replay buffer is not saved: refill it before the first gradient step again.
            refill = hp["learning_starts"] if args.refill is None else args.refill
            model.learning_starts = model.num_timesteps + refill
        print(f"[train] resuming from {resume_from.name} at {model.num_timesteps} steps", flush=True)
    else:
        model = algorithm_class(args.algo)("CnnPolicy", venv, seed=args.seed, verbose=1, device="cpu", **kwargs)
    done = model.num_timesteps
    random_return = play_games(None, args.env, args.eval_games, seed=10_000, max_episode_steps=args.eval_max_steps)
    checkpointer = Checkpointer(args, hp, random_return, started)
    (args.out / "command.txt").write_text(" ".join(shlex.quote(a) for a in ["python", *sys.argv]) + "\n")
    model.learn(total_timesteps=args.total_timesteps - done, callback=checkpointer, reset_num_timesteps=done == 0,
                log_interval=20 if args.algo == "dqn" else 10, progress_bar=False)
    if model.num_timesteps % args.save_every:
        checkpointer.save(model, int(model.num_timesteps))


if __name__ == "__main__":
    main()
