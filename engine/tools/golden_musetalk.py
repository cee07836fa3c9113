"""MuseTalk 1.5 golden cases (shared/golden/musetalk) through the real loaders.

Cases are found from the json files by name prefix (unet, audio*, vae, crop, blend, pipeline*);
every size, fps, seed and file name is read from the case json. A runner returns the largest
relative error of its float tensors and raises when an exact check (index, box, frame) fails.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.tools.golden import rel_error

KINDS = ("unet", "audio", "vae", "crop", "blend", "pipeline")


class GoldenMismatch(AssertionError):
    """An exact (integer, box, index) check failed."""


def _io(folder: Path, meta: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / meta["io"]))


@lru_cache(maxsize=4)
def _model(models_dir: str):
    from engine.dub.musetalk import MuseTalk

    return MuseTalk.load(models_dir)


def _musetalk(folder: Path):
    return _model(str(folder / "models"))


def _exact(what: str, ours, ref) -> None:
    if isinstance(ours, torch.Tensor):
        ours = ours.numpy()
    if isinstance(ref, torch.Tensor):
        ref = ref.numpy()
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape or not np.array_equal(ours, ref):
        where = "" if ours.shape != ref.shape else f", first at {tuple(np.argwhere(ours != ref)[0])}"
        shown = f" ({ours.tolist()} vs {ref.tolist()})" if max(ours.size, ref.size) <= 12 else ""
        raise GoldenMismatch(f"{what}: ours {ours.shape} differs from golden {ref.shape}{where}{shown}")


def unet_case(folder: Path, meta: dict) -> float:
    mt, io = _musetalk(folder), _io(folder, meta)
    err_pe = rel_error(mt.add_positional_encoding(io["audio"]), io["audio_pe"])
    return max(err_pe, rel_error(mt.predict(io["latents"], io["audio"]), io["out"]))


def audio_case(folder: Path, meta: dict) -> float:
    from engine.dub.musetalk import load_audio_16k, window_rows

    mt, io = _musetalk(folder), _io(folder, meta)
    wave = load_audio_16k(folder / meta["wav"])
    _exact("librosa length", len(wave), meta["librosa_length"])
    errs = []
    if "wav_16k" in io:
        errs.append(rel_error(torch.from_numpy(wave), io["wav_16k"]))
    if "mel" in io:
        errs.append(rel_error(mt.mel(wave), io["mel"]))
    features = mt.audio_features(wave)
    if "feature_rows" in meta:
        _exact("feature rows", features.shape[1], meta["feature_rows"])
    if "features" in io:
        errs.append(rel_error(features, io["features"]))
    if "features_rows" in io:
        a, b = meta["feature_rows_range"]
        errs.append(rel_error(features[:, a:b], io["features_rows"]))
    fps = meta["fps_given"]
    index = window_rows(len(wave), fps, features.shape[1])
    if "fps_used" in meta:
        _exact("fps used", int(fps), meta["fps_used"])
    if "frames" in meta:
        _exact("frames", index.shape[0], meta["frames"])
    _exact("chunk_index", index, io["chunk_index"])
    if "float_floor_frames" in meta:   # where the float product starts a window one row early
        q = 50 / int(fps)
        early = [i for i in range(len(index)) if math.floor(i * q) != 50 * i // int(fps)]
        _exact("float_floor_frames", early, meta["float_floor_frames"])
    windows = {}
    if "chunks" in io:
        windows["chunks"] = (range(len(index)), io["chunks"])
    if "chunks_frames" in io:
        windows["chunks_frames"] = (range(*meta["chunk_frames_range"]), io["chunks_frames"])
    if "chunks_floor_frames" in io:
        windows["chunks_floor_frames"] = (range(*meta["floor_frames_range"]), io["chunks_floor_frames"])
    # every frame's window, expanded from the golden index, must equal what audio_windows gives
    full = mt.audio_windows(features, len(wave), fps)
    golden_index = io["chunk_index"]
    table = torch.cat([features[0], features.new_zeros((1,) + tuple(features.shape[2:]))])
    errs.append(rel_error(full, table[golden_index].reshape(full.shape)))
    for name, (frames, ref) in windows.items():
        errs.append(rel_error(mt.audio_windows(features, len(wave), fps, frames=frames), ref))
    return max(errs)


def vae_case(folder: Path, meta: dict) -> float:
    mt, io = _musetalk(folder), _io(folder, meta)
    crops = io["crops"].numpy()
    if "scaling_factor" in meta and mt.scaling_factor != meta["scaling_factor"]:
        raise GoldenMismatch(f"scaling factor {mt.scaling_factor} != {meta['scaling_factor']}")
    mean, std = mt.posterior(crops)
    errs = [rel_error(mean, io["dist_mean"]), rel_error(std, io["dist_std"])]
    torch.manual_seed(meta["seed"])
    latents = mt.encode(crops)
    errs.append(rel_error(latents, io["latents"]))
    decoded = mt.decode_float(io["decode_in"])
    errs.append(rel_error(decoded, io["decoded_sample"]))
    errs.append(_uint8_frames("vae frames", mt.decode(io["decode_in"]), io["frames"].numpy(),
                              decoded, io["decoded_sample"]))
    return max(errs)


def _uint8_frames(what: str, ours: np.ndarray, ref: np.ndarray, ours_float: torch.Tensor, ref_float: torch.Tensor) -> float:
    """uint8 decode results: identical, or off by one only at rounding ties where the float agrees."""
    err = rel_error(ours_float, ref_float)
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    if diff.max(initial=0) > 1 or (diff.any() and err > 1e-4):
        raise GoldenMismatch(f"{what}: {int((diff > 0).sum())} pixels differ (max {int(diff.max())}), float error {err:.2e}")
    if diff.any():
        # a difference must sit at a rounding tie: 255*x within float noise of .5
        x = ((ref_float.double() / 2 + 0.5).clamp(0, 1) * 255).permute(0, 2, 3, 1).numpy()[..., ::-1]
        frac = np.abs(x - np.floor(x) - 0.5)
        if frac[diff > 0].max() > 1e-3:
            raise GoldenMismatch(f"{what}: a pixel differs by 1 away from a rounding tie")
    return err


def _detections(io: dict, key: str = "detections") -> list[np.ndarray]:
    """Each frame's detector rows; only the first detections_count[f] exist when a count is stored."""
    dets = io[key].numpy()
    counts = io["detections_count"].numpy() if "detections_count" in io else [dets.shape[1]] * dets.shape[0]
    return [dets[f, :int(c)] for f, c in enumerate(counts)]


def _golden_box(value):
    """A recorded box; the official placeholder (0.0, 0.0, 0.0, 0.0) for "no face" is None."""
    if value is None or all(isinstance(v, float) and v == 0.0 for v in value):
        return None
    return tuple(value)


def crop_case(folder: Path, meta: dict) -> float:
    from engine.dub.face.crop import track_boxes, with_margin

    io = _io(folder, meta)
    keypoints, dets = io["keypoints"].numpy(), _detections(io)
    heights = [h for h, _ in meta["frame_sizes_hw"]]
    for shift in meta["bbox_shifts"]:
        run = meta["runs"][str(shift)]
        track = track_boxes(keypoints, dets, bbox_shift=shift)
        for f, (ours, ref, kind) in enumerate(zip(track.boxes, run["coords"], run["coord_types"])):
            want = None if kind == "placeholder" else tuple(ref)
            _exact(f"box of frame {f} at bbox_shift {shift}", ours.box if ours else (), want or ())
            ours_kind = "placeholder" if ours is None else ("int32" if ours.source == "landmarks" else "int")
            _exact(f"box source of frame {f} at bbox_shift {shift}", ours_kind, kind)
            margin = run["v15_box_after_extra_margin"][f]
            _exact(f"v1.5 box of frame {f} at bbox_shift {shift}",
                   with_margin(ours.box, meta["extra_margin"], heights[f]) if ours else (), tuple(margin or ()))
        _exact(f"bbox-shift report at {shift}", track.report, run["bbox_range_text"])
        printed = [f"error bbox: {track.boxes[f].box}" for f in track.fallbacks] + [track.report]
        _exact(f"printed lines at {shift}", printed, run["printed"])
    return 0.0


def blend_case(folder: Path, meta: dict) -> float:
    from engine.dub.blend import expanded_square, paste_face, paste_mask, resize_face
    from engine.dub.face.parsing import FaceParser

    io = _io(folder, meta)
    parser = _parser(str(folder / "models"))
    frame, face = io["frame"].numpy(), io["face256"].numpy()
    notes, parsed = [], {}
    for name, sub in meta["subcases"].items():
        box, cheeks = sub["box"], (sub["left_cheek_width"], sub["right_cheek_width"])
        _exact(f"{name} expanded square", expanded_square(box), sub["crop_box"])
        mask = paste_mask(frame, box, parser, sub["mode"], cheeks, classes=parsed.get(tuple(box)))
        parsed[tuple(box)] = mask.classes   # the same square is parsed once for every mode
        _exact(f"{name} blur kernel", int(0.05 * (mask.square[2] - mask.square[0]) // 2 * 2) + 1, sub["blur_kernel"])
        hist = np.bincount(mask.classes.ravel(), minlength=len(sub["class_histogram"])).tolist()
        flips = _class_flips(name, parser, frame, mask, io, sub) or _histogram_flips(name, parser, frame, mask, hist, sub)
        notes.append(f"{name}: {flips} class flips")
        if flips == 0:
            _exact(f"{name} class histogram", hist, sub["class_histogram"])
        if f"{name}.parse_input" in io:
            from PIL import Image

            square = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])).crop(mask.square)
            _exact(f"{name} parser input", np.asarray(square), io[f"{name}.parse_input"])
        if f"{name}.face_resized" in io:
            _exact(f"{name} resized face", resize_face(face, box), io[f"{name}.face_resized"])
        if f"{name}.mask512" in io and flips == 0:
            _exact(f"{name} mask512", mask.mask512, io[f"{name}.mask512"])
            _exact(f"{name} blurred mask", mask.alpha, io[f"{name}.blur_mask"])
        out = paste_face(frame, face, box, parser, sub["mode"], cheeks, mask=mask)
        if flips == 0:
            _exact(f"{name} blended frame", out, io[f"{name}.out"])
    return 0.0


def _class_flips(name: str, parser, frame, mask, io: dict, sub: dict) -> int:
    """BiSeNet argmax pixels that differ from the golden; each must be a near-tie (margin < 1e-4)."""
    key = f"{name}.classes512"
    if key not in io:
        return 0
    diff = mask.classes != io[key].numpy()
    if not diff.any():
        return 0
    from PIL import Image

    body = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])).crop(mask.square)
    top2 = np.sort(parser.scores(body).numpy(), axis=0)[-2:]
    margin = top2[1] - top2[0]
    allowed = sub["argmax_margin"]["pixels_below_1e-4"]
    if diff.sum() > allowed or margin[diff].max() >= 1e-4:
        raise GoldenMismatch(f"{name}: {int(diff.sum())} BiSeNet class flips, not all near-ties")
    return int(diff.sum())


def _histogram_flips(name: str, parser, frame, mask, hist: list[int], sub: dict) -> int:
    """Where the golden has no class map, only its histogram: the difference must come from near-tie
    pixels (top-two margin < 1e-4) flipped to their runner-up class, no more of them than the golden counts."""
    golden = np.asarray(sub["class_histogram"])
    need = golden - np.asarray(hist)                       # > 0: the golden has more of that class
    if not need.any():
        return 0
    from PIL import Image

    body = Image.fromarray(np.ascontiguousarray(frame[:, :, ::-1])).crop(mask.square)
    scores = parser.scores(body).numpy()
    order = np.argsort(scores, axis=0)
    top1, top2 = order[-1], order[-2]
    margin = np.take_along_axis(scores, order[-1:], 0)[0] - np.take_along_axis(scores, order[-2:-1], 0)[0]
    flips = 0
    for y, x in zip(*np.nonzero(margin < 1e-4)):
        ours, runner = top1[y, x], top2[y, x]
        if need[ours] < 0 and need[runner] > 0:
            need[ours] += 1
            need[runner] -= 1
            flips += 1
    if need.any() or flips > sub["argmax_margin"]["pixels_below_1e-4"]:
        raise GoldenMismatch(f"{name} class histogram: ours {hist} differs from golden {golden.tolist()} by more "
                             "than near-tie BiSeNet flips")
    return flips


@lru_cache(maxsize=2)
def _parser(models_dir: str):
    from engine.dub.face.parsing import FaceParser

    return FaceParser.load(models_dir)


def pipeline_case(folder: Path, meta: dict) -> float:
    """scripts/inference.py (v1.5) on stored frames, landmarks and detections, up to the PNGs."""
    from engine.dub.blend import paste_face, paste_mask
    from engine.dub.cycle import output_sources
    from engine.dub.face.crop import crop_face, track_boxes, with_margin
    from engine.dub.musetalk import load_audio_16k

    args, io = meta["args"], _io(folder, meta)
    mt, parser = _musetalk(folder), _parser(str(folder / "models"))
    frames = io["input_frames"].numpy()
    height = frames.shape[1]
    shift = 0 if args.get("version") == "v15" else args["bbox_shift"]   # v1.5 ignores --bbox_shift
    track = track_boxes(io["keypoints"].numpy(), _detections(io), bbox_shift=shift)
    for f, (ours, ref) in enumerate(zip(track.boxes, meta["coords"])):
        _exact(f"box of frame {f}", ours.box if ours else None, _golden_box(ref))
    boxes = [with_margin(b.box, args["extra_margin"], height) if b else None for b in track.boxes]
    face_frames = [f for f, b in enumerate(boxes) if b is not None]

    torch.manual_seed(meta["seed"])
    crops = np.stack([crop_face(frames[f], boxes[f]) for f in face_frames])
    latents = dict(zip(face_frames, mt.encode(crops)))
    errs = [rel_error(torch.stack([latents[f] for f in face_frames]), io["latents"])]

    wave = load_audio_16k(folder / meta["wav"])
    features = mt.audio_features(wave)
    windows = mt.audio_windows(features, len(wave), args["fps"], pad_left=args["audio_padding_length_left"],
                               pad_right=args["audio_padding_length_right"])
    _exact("output frames", windows.shape[0], meta["output_frames"])
    sources = output_sources(windows.shape[0], [b is not None for b in boxes])
    _exact("latent_source_frame", [s.latent_frame for s in sources], meta["latent_source_frame"])
    _exact("pasted_frame", [s.frame if s.written else None for s in sources], meta["pasted_frame"])
    _exact("pasted_box", [list(boxes[s.frame]) if s.written else None for s in sources], meta["pasted_box"])
    written = [s.index for s in sources if s.written]
    if meta.get("written_indices") not in (None, "all 0..output_frames-1"):
        _exact("written_indices", written, meta["written_indices"])

    size = args["batch_size"]
    batches = [sources[i:i + size] for i in range(0, len(sources), size)]
    _exact("batches", [len(b) for b in batches], meta["batches"])
    masks, preds, faces = {}, [], []
    for batch in batches:
        idx = [s.index for s in batch]
        pred = mt.predict(torch.stack([latents[s.latent_frame] for s in batch]), windows[idx])
        preds.append(pred)
        faces.extend(mt.decode(pred))
    pred = torch.cat(preds)
    errs.append(rel_error(pred, io["pred_latents"]))
    out = []
    cheeks = (args["left_cheek_width"], args["right_cheek_width"])
    for s in sources:
        if not s.written:
            continue
        f, box = s.frame, boxes[s.frame]
        if f not in masks:   # the parse depends only on the frame and its box
            masks[f] = paste_mask(frames[f], box, parser, args["parsing_mode"], cheeks)
        out.append(paste_face(frames[f], faces[s.index], box, parser, args["parsing_mode"], cheeks, mask=masks[f]))
    ours, ref = np.stack(out), io["frames"].numpy()
    diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
    if diff.any():
        # a decode rounding tie (a face pixel 1 off) may move a blended pixel by 1; nothing more
        if diff.max() > 1 or errs[-1] > 1e-4:
            raise GoldenMismatch(f"pipeline frames: {int((diff > 0).sum())} pixels differ, max {int(diff.max())}")
    return max(errs)


def discover(folder: Path) -> Iterator[tuple[str, Callable[[], float]]]:
    folder = Path(folder)
    runners = {"unet": unet_case, "audio": audio_case, "vae": vae_case, "crop": crop_case, "blend": blend_case,
               "pipeline": pipeline_case}
    for path in sorted(folder.glob("*.json")):
        stem = path.name[: -len(".json")]
        if stem == "models":
            continue
        meta = json.loads(path.read_text())
        if "io" not in meta:  # e.g. pipeline_noface: json only, not a case to reproduce
            continue
        kind = next((k for k in KINDS if stem.startswith(k)), None)
        if kind is None or kind not in runners:
            continue
        yield f"musetalk:{stem}", (lambda f=runners[kind], m=meta: f(folder, m))
