"""Several GPUs (or hosts): torch.distributed, launched by torchrun.

Supported now: guidance-branch parallelism. The guidance passes of every denoising step are
spread over the ranks, each rank runs its share, the outputs are gathered, and every rank combines
them identically, so all ranks hold the same latents: the same numbers as a single process.
Rank 0 writes the video. Not yet: sequence (context) parallelism inside one pass.

    torchrun --nproc-per-node 2 -m engine generate ...
"""
from engine.parallel.group import LaunchEnv, ParallelGroup, RankStopped, launch_env
from engine.parallel.passes import assign_passes, split_line, step_speedup


def start_from_env(device: str | None = None) -> ParallelGroup | None:
    """The process group of a torchrun launch, or None when this is a single process."""
    env = launch_env()
    return None if env is None else ParallelGroup.start(env, device)


__all__ = ["LaunchEnv", "ParallelGroup", "RankStopped", "launch_env", "start_from_env", "assign_passes",
           "split_line", "step_speedup"]
