"""A prepared avatar: a short clip of a person made ready once, then made to speak any voice fast.

`Avatar.prepare` does every per-frame step that does not depend on the voice, once: the face
track, the crop boxes, the VAE latents of the crops (seeded) and the paste masks (BiSeNet), and
keeps the frames on disk. `speak(voice)` then only runs whisper, the UNet, the VAE decoder and
the paste per frame, cycling the clip ping-pong for as long as the voice lasts, and yields the
frames as they are made (real-time use: a live preview, a call, a kiosk).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.dub.lengths import ping_pong_frame
from engine.dub.request import LATENTSYNC, DubRequest, validate_dub_request
from engine.errors import InputError


class Avatar:
    def __init__(self, dubber, request: DubRequest, info, frames: np.ndarray, boxes: list, latents: dict,
                 masks: dict, folder):
        self.dubber, self.request, self.info = dubber, request, info
        self.frames, self.boxes, self.latents, self.masks = frames, boxes, latents, masks
        self._folder = folder             # keeps the frames' temporary folder alive

    @classmethod
    def prepare(cls, dubber, request: DubRequest) -> "Avatar":
        """Track, crop, encode and parse every frame of `request.video` (its audio is not used)."""
        import torch

        from engine.dub.blend import paste_mask
        from engine.dub.face.crop import crop_face
        from engine.dub.face.track import face_track
        from engine.dub.pipeline import _crop_box
        from engine.media.video_in import probe_video, read_frames

        req = validate_dub_request(request)
        if req.model == LATENTSYNC:
            raise InputError("A prepared avatar is MuseTalk 1.5's real-time mode; LatentSync has none.",
                             hint="Prepare the avatar with model musetalk-1.5, or dub the video instead.")
        for _ in dubber.load():
            pass
        info = probe_video(req.video)
        detector, landmarker = dubber.face_finder(req.model)
        track, _ = face_track(info, cache_dir=dubber.cache_dir, detector=detector, landmarker=landmarker,
                              track_file=req.face_track)
        folder = tempfile.TemporaryDirectory(prefix="humo-avatar-")
        frames = np.memmap(Path(folder.name) / "frames.u8", np.uint8, "w+",
                           shape=(len(track), info.height, info.width, 3))
        generator = torch.Generator().manual_seed(req.seed)
        boxes, latents, masks = [], {}, {}
        cheeks = (req.cheek_left, req.cheek_right)
        s = 0
        for chunk in read_frames(info, req.batch_size):
            for frame in chunk[: len(track) - s]:
                frames[s] = frame
                box = _crop_box(track, s, req, info.height)
                boxes.append(box)
                if box is not None:
                    latents[s] = dubber.model.encode(crop_face(frame, box)[None], generator=generator)[0]
                    masks[s] = paste_mask(frame, box, dubber.parser, req.parsing_mode, cheeks)
                s += 1
        return cls(dubber, req, info, frames[:s], boxes, latents, masks, folder)

    def speak(self, voice_16k: np.ndarray) -> Iterator[np.ndarray]:
        """uint8 BGR frames, one per audio window of the voice, at the clip's size and frame rate."""
        import torch

        from engine.dub.blend import paste_face
        from engine.dub.musetalk import window_rows

        req, model, n = self.request, self.dubber.model, len(self.frames)
        features = model.voice_features(voice_16k)
        n_out = int(window_rows(len(voice_16k), self.info.fps, features.shape[1], req.fps_rule).shape[0])
        for start in range(0, n_out, req.batch_size):
            indices = list(range(start, min(start + req.batch_size, n_out)))
            sources = [ping_pong_frame(i, n) for i in indices]
            jobs = [(i, s) for i, s in zip(indices, sources) if self.boxes[s] is not None]
            faces = {}
            if jobs:
                batch = torch.stack([self.latents[s] for _, s in jobs]).to(model.device, model.dtype)
                windows = model.audio_windows(features, len(voice_16k), self.info.fps, req.fps_rule,
                                              frames=[i for i, _ in jobs])
                decoded = model.decode(model.predict(batch, windows.to(model.device, model.dtype)))
                faces = {i: face for (i, _), face in zip(jobs, decoded)}
            for i, s in zip(indices, sources):
                frame = np.asarray(self.frames[s])
                if i in faces:
                    frame = paste_face(frame, faces[i], self.boxes[s], self.dubber.parser, mode=req.parsing_mode,
                                       cheeks=(req.cheek_left, req.cheek_right), mask=self.masks[s])
                yield np.array(frame)
