"""Several GPUs (or hosts): torch.distributed, launched by torchrun.

The ranks form a grid of G guidance columns × S sequence ranks (S = --sequence-ways, default 1):
  guidance  the guidance passes of every denoising step are spread over the G columns, each runs
            its share, the outputs are gathered along the column, and every rank combines them
            identically, so all ranks hold the same latents (engine.parallel.passes);
  sequence  the S ranks of a column share the tokens of each of its passes, through diffusers'
            context parallelism (Ulysses, ring where the heads do not divide; engine.parallel.sequence).
Both give the numbers of a single process. Rank 0 writes the video.

    torchrun --nproc-per-node 4 -m engine generate --sequence-ways 2 ...
"""
from engine.parallel.group import LaunchEnv, ParallelGroup, RankStopped, launch_env
from engine.parallel.passes import assign_passes, split_line, step_speedup


def start_from_env(device: str | None = None) -> ParallelGroup | None:
    """The process group of a torchrun launch, or None when this is a single process."""
    env = launch_env()
    return None if env is None else ParallelGroup.start(env, device)


__all__ = ["LaunchEnv", "ParallelGroup", "RankStopped", "launch_env", "start_from_env", "assign_passes",
           "split_line", "step_speedup"]
