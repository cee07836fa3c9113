"""HuMo Studio: start the Gradio app (also the Hugging Face Space entry point).

    ./launch.sh [--host H] [--port P] [--share] [--auth user:pass[,user:pass]] [--auth-file FILE]
                [--variant V] [--weights-dir DIR] [--outputs-dir DIR] [--max-upload-mb MB]

Every flag has an environment twin (HUMO_HOST, HUMO_PORT, HUMO_SHARE, HUMO_AUTH, HUMO_AUTH_FILE,
HUMO_VARIANT, HUMO_WEIGHTS_DIR, HUMO_OUTPUTS_DIR, HUMO_MAX_UPLOAD_MB). Nothing heavy is imported here: the models load on the
first generation, so the page is up in a few seconds even with no weights on disk.
"""
from __future__ import annotations

import importlib.util
import os
import socket
import sys
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

_T0 = time.perf_counter()


def share_possible(timeout_s: float = 2.0) -> str | None:
    """None when a share link can be tried, else why not (checked quickly, before Gradio waits 30 s).

    Checks the share server Gradio will use: GRADIO_SHARE_SERVER_ADDRESS (host:port) when set,
    else Gradio's public API server.
    """
    custom = os.environ.get("GRADIO_SHARE_SERVER_ADDRESS")
    host, port = (custom.rsplit(":", 1)[0], int(custom.rsplit(":", 1)[1])) if custom else ("api.gradio.app", 443)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except (OSError, ValueError) as err:
        return f"the share server {host}:{port} is not reachable ({err.__class__.__name__}: {err})"


def mcp_available() -> bool:
    return importlib.util.find_spec("mcp") is not None


def space_defaults(config) -> None:
    """On a Hugging Face Space: listen on every interface, and keep weights and the gallery on the
    Space's persistent storage (/data) when it has some, unless the environment says otherwise."""
    if "HUMO_HOST" not in os.environ:
        config.host = "0.0.0.0"
    data = os.environ.get("HUMO_SPACE_DATA", "/data")
    if os.path.isdir(data) and os.access(data, os.W_OK):
        if "HUMO_WEIGHTS_DIR" not in os.environ:
            config.weights_dir = os.path.join(data, "weights")
        if "HUMO_OUTPUTS_DIR" not in os.environ:
            config.outputs_dir = os.path.join(data, "outputs")


def guard_kwargs(config, accounts, share: bool) -> dict:
    """Gradio's app with the studio's front door (studio.guard) in front: sign-in throttle with
    accounts, Host names checked without them, nosniff on every response."""
    from starlette.middleware import Middleware

    from studio.accounts import LoginThrottle
    from studio.guard import StudioGuard, host_names

    hosts = None if accounts else host_names(config.host, share)
    return {"middleware": [Middleware(StudioGuard, hosts=hosts, throttle=LoginThrottle() if accounts else None,
                                      private_dir=os.path.abspath(config.outputs_dir) if accounts else None)]}


def main(argv: list[str] | None = None) -> int:
    from studio.config import parse_config

    config = parse_config(argv)
    on_space = bool(os.environ.get("SPACE_ID"))
    if on_space:
        space_defaults(config)

    from pathlib import Path

    import gradio as gr

    from studio.accounts import Accounts
    from studio.app_ui import CSS, build_app
    from studio.housekeeping import clean_workdir

    accounts = Accounts(config.auth)
    clean_workdir(Path(config.outputs_dir) / ".work")      # what a crash or a kill left behind
    if not accounts:
        # Finished videos and thumbnails are served from the outputs folder as they are: Gradio would
        # otherwise copy each one into its temp folder (swept by delete_cache). With accounts the
        # outputs folder stays private (studio.guard): each visitor gets Gradio's copies of their runs.
        gr.set_static_paths([os.path.abspath(config.outputs_dir)])
    demo = build_app(config)
    demo.queue(default_concurrency_limit=1, max_size=64)

    share = config.share
    if share:
        why = share_possible()
        if why:
            print(f"* No share link: {why}. Serving locally only; check the internet connection "
                  "or drop --share.", flush=True)
            share = False

    launch_kwargs = dict(server_name=config.host, server_port=config.port, share=share,
                         auth=accounts.verify if accounts else None, app_kwargs=guard_kwargs(config, accounts, share),
                         inbrowser=config.open_browser, show_error=False,
                         theme=demo.humo_theme, css=CSS, footer_links=["api", "settings"],
                         allowed_paths=[os.path.abspath(config.outputs_dir)], prevent_thread_lock=True,
                         max_file_size=config.max_upload_mb * 1024 * 1024)
    if config.mcp and mcp_available():
        launch_kwargs["mcp_server"] = True
    elif config.mcp:
        print("* MCP server off: install gradio[mcp] to serve the studio's tools to MCP clients.", flush=True)
    if accounts:
        from studio.accounts import LoginThrottle
        # The sign-in page shows only its own "incorrect credentials" line, so it states the rule up front.
        launch_kwargs["auth_message"] = f"HuMo Studio: sign in. {LoginThrottle().rule()}"

    demo.launch(**launch_kwargs)
    print(f"* HuMo Studio ready in {time.perf_counter() - _T0:.2f} s "
          f"(weights: {config.weights_dir}, outputs: {config.outputs_dir})", flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    demo.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: model worker threads may still hold the interpreter for seconds, and every
    # file the studio writes (videos, gallery) is written atomically, so there is nothing to finish.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
