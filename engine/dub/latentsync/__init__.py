"""LatentSync 1.6 lip-sync, reproducing the official inference (golden parity in shared/golden/latentsync).

Modules:
- `unet3d`: the 3D UNet built from diffusers blocks; `load_unet(path, unet_config(...))` reads
  `latentsync_unet.pt` strictly; the released 1.6 config ships as `config.json` next to it.
- `audio`: whisper-tiny features from the openai-format `tiny.pt` (window by window: `FeatureStream`)
  and the per-frame audio chunks.
- `model`: the released files loaded for the streaming dub pipeline (`LatentSync`), the alignment
  points from the face track and one run's chunk loop (`SyncRun`).
- `masks`: the fixed mouth mask and the masked UNet inputs.
- `ddim`: DDIM sampling of one chunk with audio guidance and optional DeepCache.
- `pipeline_core`: one chunk end to end in face space (`run_chunk`), the frame loop and
  `lipsync_clip` for a short clip held in memory.
- `engine.dub.face.align`: 3-point face alignment and paste-back.

Official behaviours that look like bugs are kept by default (the golden data pins them). Where a
fix is obvious it is a named option; the first value is the official one (the default of these
functions; the dub request's own defaults are listed in the README):

| option | where | values | what the fix does |
| --- | --- | --- | --- |
| `pad` | `audio.WhisperStates.features` | "zeros" / "silence" | pads the last 30 s encoder window with the log-mel floor (silence) instead of log-mel zeros (a loud flat spectrum) |
| `windows` | `audio.FeatureStream` | "cut" / "overlap" | encodes 30 s windows every 20 s and takes each row from the one where it has context on both sides, instead of windows cut apart (the jump every 30 s) |
| `floor` | `audio.WhisperStates.features` | "file" / "window" | sets the log-mel floor per 30 s window, so a passage no longer depends on the loudest moment of the whole file |
| `frame_count` | `pipeline_core.lipsync_clip` | "official" / "audio" | makes as many frames as the audio lasts at the video rate instead of `rows // 2 + 2` (one or two extra frames) |
| `smoothing` | `engine.dub.face.align.FaceAligner` | "official" / "pixels" / "off" | adds the smoothed nose residual in crop pixels instead of normalised units added as pixels (which moves the crop by hundredths of a pixel) |
| `rounding` | `engine.dub.face.align.FaceAligner` | "truncate" / "round" | rounds the warped crop and the pasted frame to uint8 instead of truncating (about −0.5 level on average) |
| `deepcache_interval` | `pipeline_core.Settings` | 3 / None | None runs every step in full (exact, slower); DeepCache is an approximation (about 3 % on the final latents) |

The forward-backward loop that shows the turning frame twice is the default of both dubbing models
(`when_audio_longer="pingpong"`); `"bounce"` shows each turning frame once (engine.dub.lengths).
Kept as they are, with no option: group-norm statistics pooled over the frames of a chunk (the
model was trained that way), and DeepCache restarting its full-step schedule at every chunk (the
official DeepCache code does the same within one video). The goldens hold for CPU float32; a GPU run draws other random numbers.
"""
