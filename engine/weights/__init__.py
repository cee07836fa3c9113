"""Find, download and verify checkpoint files.

The weights folder mirrors the official download commands, e.g.

    huggingface-cli download bytedance-research/HuMo --local-dir weights/HuMo
    huggingface-cli download Wan-AI/Wan2.1-T2V-1.3B --local-dir weights/Wan2.1-T2V-1.3B

so a folder made by hand and one made here look the same. Each variant needs a few
*components* (DiT, VAE, text encoder, tokenizer, audio encoder, optional vocal separator);
each component is a handful of files from one Hub repository.

`find` never touches the network: it looks in the weights folder, then in the Hugging Face
cache. `download` checks local files first, then fetches only what is missing with
huggingface_hub (so `HF_ENDPOINT` and tokens work as usual), checks the sizes and the LFS
sha256 the Hub publishes, and records them in `.humo-manifest.json` so later checks can spot a
truncated file without hashing it again. Transfers resume across runs: unfinished files wait in
`<weights>/.partial/` (never counted as present) until a later run completes them;
`HUMO_DOWNLOAD=hub` uses plain `hf_hub_download` instead (Xet transfers, no cross-run resume).

The pieces:
  components   the component table: repositories, files, approximate sizes, fetch commands
  checks       does a file on disk look whole (safetensors header, zip directory, json)
  status       file / component / variant statuses as data, and `format_bytes`
  local        `find`, `require`, `locate`, `weights_summary`, the manifest and the HF cache
  hub          one file from the Hub: offline mode, metadata (size, sha256), the transfer
  resume       partial files, their sidecars and the Range transfer that continues them
  downloader   `download`: disk space, fetch, verify, record
"""
from engine.errors import Cancelled, OutOfResources, WeightsError
from engine.weights.checks import check_file
from engine.weights.components import (APPROX_BYTES, COMPONENTS, DEFAULT_WEIGHTS_DIR, DIT_1_7B, DIT_17B, DUB_MODELS,
                                       GB, MUSETALK_1_5, DubModel,
                                       HUMO_REPO, MB, SEPARATOR, SEPARATOR_REPO, SHARED, T5, TOKENIZER, VAE,
                                       WAN_REPO, WEIGHTS_DIR_ENV, WHISPER, WHISPER_REPO, Component,
                                       components_for, default_weights_dir, fetch_command, posix_dirname)
from engine.weights.downloader import DISK_MARGIN_BYTES, check_disk_space, download
from engine.weights.hub import MessageCallback, ProgressCallback, is_offline
from engine.weights.local import MANIFEST_NAME, find, locate, read_manifest, require, weights_summary
from engine.weights.resume import DOWNLOAD_MODE_ENV, PARTIAL_DIR, download_mode
from engine.weights.status import ComponentStatus, FileStatus, Status, format_bytes

__all__ = [
    "APPROX_BYTES", "COMPONENTS", "DEFAULT_WEIGHTS_DIR", "DIT_1_7B", "DIT_17B", "DUB_MODELS", "DubModel",
    "MUSETALK_1_5", "DISK_MARGIN_BYTES", "DOWNLOAD_MODE_ENV",
    "GB", "PARTIAL_DIR", "download_mode",
    "HUMO_REPO", "MANIFEST_NAME", "MB", "SEPARATOR", "SEPARATOR_REPO", "SHARED", "T5", "TOKENIZER", "VAE",
    "WAN_REPO", "WEIGHTS_DIR_ENV", "WHISPER", "WHISPER_REPO",
    "Cancelled", "Component", "ComponentStatus", "FileStatus", "MessageCallback", "OutOfResources",
    "ProgressCallback", "Status", "WeightsError",
    "check_disk_space", "check_file", "components_for", "default_weights_dir", "download", "fetch_command",
    "find", "format_bytes", "is_offline", "locate", "posix_dirname", "read_manifest", "require",
    "weights_summary",
]
