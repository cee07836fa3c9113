"""HuMo engine: everything that computes. Imports no UI code.

Public surface:
    Engine(weights_dir).generate(GenerationRequest) -> iterator of events (engine.events)
    Engine.cancel(), Engine.load(variant), Engine.unload()
    RankPool(world, weights_dir): the other ranks of a front end that runs each generation on
    several GPUs (engine.parallel.serve); EngineSettings: what every rank builds its Engine with
"""
import logging

from engine.errors import Cancelled, EngineError, InputError, OutOfResources, WeightsError
from engine.request import GenerationRequest

# bitsandbytes announces an optional CPU kernel it could not fetch; it is not an error for us.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__all__ = ["Engine", "GenerationRequest", "EngineError", "InputError", "WeightsError", "Cancelled", "OutOfResources"]


def __getattr__(name):
    # Engine pulls in torch/diffusers; keep `import engine` cheap for the UI's start-up.
    if name == "Engine":
        from engine.humo.pipeline import Engine
        return Engine
    if name in ("RankPool", "EngineSettings"):
        from engine.parallel import serve
        return getattr(serve, name)
    raise AttributeError(name)
