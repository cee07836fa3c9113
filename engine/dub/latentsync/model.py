"""LatentSync 1.6 as the streaming dub pipeline uses it: the released files loaded once, the voice
encoded window by window, and one chunk of up to 16 frames dubbed from the face track.

Folder layout (`<weights>/latentsync-1.6/`, as the Hub repos name the files):
  latentsync_unet.pt, whisper/tiny.pt      ByteDance/LatentSync-1.6
  sd-vae/config.json, sd-vae/*.safetensors stabilityai/sd-vae-ft-mse
  unet_config.json                         only for the tiny random-weight model; the released
                                           UNet's settings ship with this code (config.json)
The fixed mouth mask is LatentSync's `latentsync/utils/mask.png` (Apache-2.0), shipped beside
this file as `mask.png`.

Alignment points come from the face track: the official 106-point landmarks when insightface's
files are there (engine.dub.face.insight), else DWPose's 68 face landmarks when it ran (brow
centres and the nose tip, as the 106-point ones give them), else the face box with the
proportions of the alignment template.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.dub.latentsync.pipeline_core import Settings, initial_noise, load_vae, run_chunk

MASK = Path(__file__).with_name("mask.png")
UNET_FILE = "latentsync_unet.pt"
WHISPER_FILE = "whisper/tiny.pt"
VAE_DIR = "sd-vae"
TINY_CONFIG = "unet_config.json"
# 68-point (iBUG) face landmarks, as DWPose gives them: the two brows and the nose tip with its wings.
BROW_LEFT_68 = list(range(17, 22))
BROW_RIGHT_68 = list(range(22, 27))
NOSE_68 = [30, 31, 33, 35]


def alignment_points(landmarks: np.ndarray | None, box) -> np.ndarray | None:
    """The 3 rounded alignment points (left brow, right brow, nose) of one face from its 106 or 68
    landmarks or its box, or None without a face."""
    if landmarks is not None and len(landmarks) == 106:
        from engine.dub.face.align import three_points

        return three_points(landmarks)
    if landmarks is not None:
        p = np.asarray(landmarks, np.float64)
        return np.round([p[BROW_LEFT_68].mean(0), p[BROW_RIGHT_68].mean(0), p[NOSE_68].mean(0)])
    if box is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = x2 - x1, y2 - y1
    if w < 8 or h < 8:
        return None
    brow_y = y1 + 0.36 * h
    # The template puts the nose 20 units below brows 41 units apart: the same ratio here.
    return np.round([[x1 + 0.3 * w, brow_y], [x1 + 0.7 * w, brow_y], [x1 + 0.5 * w, brow_y + 0.4 * w * 20 / 41]])


def mouth_region(frame_size: tuple[int, int], points: np.ndarray, resolution: int = 512):
    """Where a face aligned from `points` sits in a frame of (height, width): the crop's bounds
    (x1, y1, x2, y2) and the fixed mouth mask warped back into the frame (uint8 [H, W], 255 = redrawn)."""
    import torch.nn.functional as F

    from engine.dub.face.align import FaceAligner, invert_affine, warp_affine
    from engine.dub.latentsync.masks import fixed_mask

    aligner = FaceAligner(resolution)
    inverse = invert_affine(aligner.fit(points))
    w, h = aligner.crop_size
    mouth = F.interpolate(1.0 - fixed_mask(MASK, resolution)[:1].float()[None], size=(h, w), mode="bilinear",
                          align_corners=False)
    height, width = frame_size
    alpha = (warp_affine(mouth, inverse, (height, width))[0, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float32) @ inverse.numpy().T
    x1, y1 = np.floor(corners.min(0)).astype(int)
    x2, y2 = np.ceil(corners.max(0)).astype(int)
    return (int(max(x1, 0)), int(max(y1, 0)), int(min(x2, width)), int(min(y2, height))), alpha


@dataclass
class SyncOptions:
    """What a run chooses (engine.dub.request holds the checked values)."""
    steps: int = 20
    guidance: float = 1.5
    deepcache: bool = True
    whisper_pad: str = "silence"
    whisper_floor: str = "file"
    whisper_windows: str = "overlap"
    smoothing: str = "official"
    rounding: str = "round"

    def settings(self) -> Settings:
        return Settings(steps=self.steps, guidance_scale=self.guidance,
                        deepcache_interval=3 if self.deepcache else None)


class LatentSync:
    """UNet, VAE and whisper-tiny of one LatentSync 1.6 folder, on one device."""

    def __init__(self, unet, vae, whisper, resolution: int, device: str, dtype: torch.dtype):
        self.unet, self.vae, self.whisper = unet, vae, whisper
        self.resolution, self.device, self.dtype = resolution, device, dtype

    @classmethod
    def load(cls, folder: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32) -> "LatentSync":
        from engine.dub.latentsync.audio import WhisperStates
        from engine.dub.latentsync.unet3d import load_unet, unet_config

        folder = Path(folder)
        tiny = folder / TINY_CONFIG
        config = unet_config(tiny if tiny.is_file() else None)
        resolution = int(config.get("sample_size", 64)) * 8
        unet = load_unet(folder / UNET_FILE, config, dtype=dtype, device=device)
        vae = load_vae(folder / VAE_DIR, dtype=dtype, device=device)
        whisper = WhisperStates(folder / WHISPER_FILE, dtype=dtype, device=device)
        return cls(unet, vae, whisper, resolution, device, dtype)

    def feature_stream(self, wave: np.ndarray, options: SyncOptions):
        from engine.dub.latentsync.audio import FeatureStream, official_samples

        return FeatureStream(self.whisper, official_samples(wave), pad=options.whisper_pad, floor=options.whisper_floor,
                             windows=options.whisper_windows)

    def noise(self, generator: torch.Generator) -> torch.Tensor:
        """The run's single noise frame; every frame of every chunk starts from it."""
        size = self.resolution // 8
        return initial_noise((size, size), generator=generator)

    @torch.no_grad()
    def dub_chunk(self, faces: torch.Tensor, audio: torch.Tensor, noise: torch.Tensor, options: SyncOptions,
                  generator: torch.Generator, on_step=None) -> torch.Tensor:
        """Aligned uint8 faces [F, 3, R, R] and their audio [F, 50, 384] -> faces [F, 3, R, R] in [-1, 1]."""
        from engine.dub.latentsync.masks import fixed_mask

        mask = fixed_mask(MASK, self.resolution)
        pasted, _ = run_chunk(self.unet, self.vae, faces, audio, noise, mask, options.settings(),
                              on_step=on_step, generator=generator)
        return pasted.float().cpu()


class SyncRun:
    """One run's LatentSync state.

    The aligner's smoothing carries from frame to frame; each source frame is aligned once, the
    first time it is shown, and a frame shown again (ping-pong) reuses that alignment, as the
    official loop aligns every input frame once. The noise frame and the generator (VAE posterior
    samples) are the run's, seeded.
    """

    def __init__(self, model: LatentSync, options: SyncOptions, seed: int, stream, fps: float,
                 shown_again: int = 0):
        """`shown_again`: the number of source frames when the output shows frames again (their
        alignment is kept, compactly, to be reused), else 0 (nothing is kept: memory stays flat)."""
        from engine.dub.face.align import FaceAligner

        self.model, self.options, self.stream, self.fps = model, options, stream, float(fps)
        self.aligner = FaceAligner(model.resolution, smoothing=options.smoothing, rounding=options.rounding)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.noise = model.noise(self.generator)
        self.matrices = np.full((shown_again, 2, 3), np.nan, np.float32) if shown_again else None

    def dub(self, frames_bgr: list[np.ndarray], jobs: list[tuple[int, int, int, np.ndarray]],
            on_step=None) -> list[np.ndarray]:
        """Frames (uint8 BGR) of one chunk; jobs: (position in the chunk, output index, source frame,
        alignment points) for the frames with a face to dub. The others come back unchanged."""
        out = [np.array(f) for f in frames_bgr]
        if not jobs:
            return out
        faces, matrices = [], []
        for k, _, s, points in jobs:
            rgb = np.ascontiguousarray(frames_bgr[k][:, :, ::-1])
            kept = self.matrices is not None and s < len(self.matrices) and not np.isnan(self.matrices[s, 0, 0])
            if kept:
                matrix = torch.from_numpy(self.matrices[s].copy())
                faces.append(self.aligner.crop(rgb, matrix))
            else:
                aligned = self.aligner.align_points(rgb, points)
                matrix = aligned.matrix
                faces.append(aligned.face)
                if self.matrices is not None and s < len(self.matrices):
                    self.matrices[s] = matrix.numpy()
            matrices.append(matrix)
        audio = self.stream.frame_chunks([i for _, i, _, _ in jobs], self.fps)
        new = self.model.dub_chunk(torch.stack(faces), audio, self.noise, self.options, self.generator, on_step)
        for (k, _, _, _), face, matrix in zip(jobs, new, matrices):
            rgb = np.ascontiguousarray(frames_bgr[k][:, :, ::-1])
            out[k] = np.ascontiguousarray(self.aligner.restore(rgb, face, matrix)[:, :, ::-1])
        return out
