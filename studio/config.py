"""Launch options for the studio: command-line flags, with environment variables as defaults.

Every flag has an environment twin (HUMO_HOST, HUMO_PORT, ...) so a Space or a container can
configure the app without a command line. Flags win over the environment.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from engine.options import VARIANTS
from studio.accounts import Account, check_unique, parse_auth_values, read_auth_file


@dataclass
class StudioConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    auth: list[Account] = field(default_factory=list)   # no accounts: no sign-in (and Host names are checked)
    variant: str = "humo-1.7b"
    weights_dir: str = "weights"
    outputs_dir: str = "outputs"
    plan: str = "auto"               # memory plan (engine.memory); "auto" picks the fastest that fits
    mcp: bool = True                 # serve the MCP endpoint when gradio[mcp] is installed
    open_browser: bool = False
    max_upload_mb: int = 1024        # largest file a visitor may upload
    gpus: int = 1                    # ranks of a generation (engine.parallel.serve): the studio is rank 0
    sequence_ways: int = 1           # of those, how many share the tokens of each pass


def _env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")


def parse_auth(values: list[str] | None, auth_file: str | None) -> list[Account]:
    """The accounts from --auth values (each a comma-separated list) and an --auth-file."""
    accounts = parse_auth_values(values)
    if auth_file:
        accounts += read_auth_file(auth_file)
    return check_unique(accounts)


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="launch.sh",
        description="HuMo Studio: prompt + photo + voice -> lip-synced video. "
                    "Every flag can also be set through the environment variable in brackets.")
    p.add_argument("--host", default=env("HUMO_HOST", "127.0.0.1"),
                   help="address to listen on; 0.0.0.0 for your network [HUMO_HOST]")
    p.add_argument("--port", type=int, default=int(env("HUMO_PORT", env("GRADIO_SERVER_PORT", "7860"))),
                   help="port [HUMO_PORT]")
    p.add_argument("--share", action="store_true", default=_env_bool("HUMO_SHARE", False),
                   help="ask Gradio for a temporary public link (needs internet) [HUMO_SHARE=1]")
    p.add_argument("--auth", action="append", metavar="USER:PASS[,USER:PASS...]",
                   help="require a sign-in; repeat it or separate accounts with commas; add :admin to an account "
                        "that may see every run in the gallery [HUMO_AUTH]")
    p.add_argument("--auth-file", default=env("HUMO_AUTH_FILE"), metavar="FILE",
                   help="accounts, one user:password (or user:password:admin) a line [HUMO_AUTH_FILE]")
    p.add_argument("--variant", default=env("HUMO_VARIANT", "humo-1.7b"), choices=sorted(VARIANTS),
                   help="variant selected when the page opens [HUMO_VARIANT]")
    p.add_argument("--weights-dir", default=env("HUMO_WEIGHTS_DIR", "weights"),
                   help="folder with the checkpoints [HUMO_WEIGHTS_DIR]")
    p.add_argument("--outputs-dir", default=env("HUMO_OUTPUTS_DIR", "outputs"),
                   help="folder for finished videos and the gallery [HUMO_OUTPUTS_DIR]")
    p.add_argument("--plan", default=env("HUMO_PLAN", "auto"), metavar="PLAN",
                   help="memory plan the studio starts with: auto (the fastest that fits the GPU), or e.g. full, "
                        "fp8, model-offload, block-offload+fp8, cpu; the page can change it [HUMO_PLAN]")
    p.add_argument("--no-mcp", action="store_true", default=not _env_bool("HUMO_MCP", True),
                   help="do not serve the MCP endpoint even when gradio[mcp] is installed [HUMO_MCP=0]")
    p.add_argument("--max-upload-mb", type=int, default=int(env("HUMO_MAX_UPLOAD_MB", "1024")), metavar="MB",
                   help="largest upload (photo or clip) in MB; bigger files are refused [HUMO_MAX_UPLOAD_MB]")
    p.add_argument("--gpus", type=int, default=int(env("HUMO_GPUS", "1")), metavar="N",
                   help="run each generation on N GPUs of this machine: the studio is rank 0 and starts the "
                        "other ranks (on a machine without GPUs, N CPU processes) [HUMO_GPUS]")
    p.add_argument("--sequence-ways", type=int, default=int(env("HUMO_SEQUENCE_WAYS", "1")), metavar="S",
                   help="with --gpus: S of the ranks share the tokens of each network pass (must divide N); "
                        "the rest share out the guidance passes [HUMO_SEQUENCE_WAYS]")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    return p


def parse_config(argv: list[str] | None = None) -> StudioConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from_env = [os.environ["HUMO_AUTH"]] if os.environ.get("HUMO_AUTH") else None
        auth = parse_auth(args.auth if args.auth else from_env, args.auth_file)
    except ValueError as err:
        parser.error(str(err))
    if args.max_upload_mb < 1:
        parser.error(f"--max-upload-mb must be at least 1, not {args.max_upload_mb}.")
    if args.gpus < 1:
        parser.error(f"--gpus must be at least 1, not {args.gpus}.")
    if args.sequence_ways < 1 or args.gpus % args.sequence_ways:
        parser.error(f"--sequence-ways {args.sequence_ways} does not divide --gpus {args.gpus}.")
    plan = (args.plan or "auto").strip() or "auto"
    why = plan_syntax_problem(plan)
    if why:
        parser.error(why)
    return StudioConfig(host=args.host, port=args.port, share=args.share, auth=auth,
                        variant=args.variant, weights_dir=args.weights_dir, outputs_dir=args.outputs_dir,
                        plan=plan, mcp=not args.no_mcp, open_browser=args.open, max_upload_mb=args.max_upload_mb,
                        gpus=args.gpus, sequence_ways=args.sequence_ways)


def plan_syntax_problem(plan: str) -> str | None:
    """A quick check of a --plan value without importing torch (the engine's parser checks it fully
    at the first run): None when it looks like a plan, else what is wrong."""
    if plan.lower() == "auto":
        return None
    parts = [t for t in plan.lower().replace(" ", "").split("+")]
    if not parts or any(not t or not all(c.isalnum() or c == "-" for c in t) for t in parts) or "auto" in parts:
        return (f"--plan {plan!r} is not a memory plan: use auto, or a base (full, fp8, model-offload, "
                "block-offload, cpu) with optional +parts, e.g. model-offload+fp8+text-nf4.")
    return None
