"""Recreate the example inputs in this folder (all made here, no third-party media).

    python assets/make_examples.py

portrait.png  a drawn head-and-shoulders portrait (PIL gradients and shapes)
voice.wav     a short spoken sentence from espeak-ng (skipped when espeak-ng is not installed)
music_voice.wav  the same sentence over a repeating synth loop, to try vocal isolation
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
SENTENCE = "Hello! Welcome to the studio. Today I will show you how a single photo learns to speak."


def _vertical_gradient(w: int, h: int, top: tuple, bottom: tuple) -> Image.Image:
    t = np.linspace(0.0, 1.0, h)[:, None, None]
    rgb = (1 - t) * np.array(top)[None, None] + t * np.array(bottom)[None, None]
    return Image.fromarray(np.repeat(rgb, w, axis=1).astype(np.uint8))


def draw_portrait(size: tuple[int, int] = (512, 640)) -> Image.Image:
    w, h = size
    img = _vertical_gradient(w, h, (104, 148, 196), (226, 214, 190))          # sky to warm wall
    d = ImageDraw.Draw(img)
    cx = w // 2
    # shoulders and shirt
    d.ellipse((cx - 210, int(h * 0.72), cx + 210, int(h * 1.25)), fill=(52, 84, 120))
    d.polygon([(cx - 40, int(h * 0.72)), (cx + 40, int(h * 0.72)), (cx, int(h * 0.82))], fill=(235, 235, 230))
    # neck
    d.rectangle((cx - 38, int(h * 0.56), cx + 38, int(h * 0.75)), fill=(214, 168, 136))
    # hair behind the head
    d.ellipse((cx - 128, int(h * 0.12), cx + 128, int(h * 0.58)), fill=(58, 38, 28))
    # face
    d.ellipse((cx - 100, int(h * 0.18), cx + 100, int(h * 0.63)), fill=(226, 182, 150))
    # fringe
    d.chord((cx - 112, int(h * 0.13), cx + 112, int(h * 0.40)), 180, 360, fill=(58, 38, 28))
    # ears
    for sx in (-1, 1):
        d.ellipse((cx + sx * 100 - 16, int(h * 0.38), cx + sx * 100 + 16, int(h * 0.46)), fill=(214, 168, 136))
    # eyes, brows
    for sx in (-1, 1):
        ex = cx + sx * 40
        ey = int(h * 0.40)
        d.ellipse((ex - 20, ey - 10, ex + 20, ey + 10), fill=(250, 250, 248))
        d.ellipse((ex - 9, ey - 9, ex + 9, ey + 9), fill=(74, 52, 36))
        d.ellipse((ex - 4, ey - 4, ex + 4, ey + 4), fill=(12, 10, 10))
        d.line((ex - 24, ey - 24, ex + 22, ey - 28 + (4 if sx > 0 else 0)), fill=(60, 40, 30), width=6)
    # nose and mouth
    d.line((cx, int(h * 0.43), cx - 8, int(h * 0.50), cx + 6, int(h * 0.51)), fill=(180, 130, 105), width=4)
    d.chord((cx - 36, int(h * 0.525), cx + 36, int(h * 0.575)), 0, 180, fill=(170, 70, 70))
    # cheeks
    img = img.filter(ImageFilter.GaussianBlur(1.2))
    glow = Image.new("RGBA", img.size, (0, 0, 0, 0))
    gd = ImageDraw.Draw(glow)
    for sx in (-1, 1):
        gd.ellipse((cx + sx * 62 - 22, int(h * 0.47), cx + sx * 62 + 22, int(h * 0.52)), fill=(230, 120, 120, 70))
    glow = glow.filter(ImageFilter.GaussianBlur(8))
    return Image.alpha_composite(img.convert("RGBA"), glow).convert("RGB")


def speak(path: Path, text: str = SENTENCE) -> bool:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return False
    subprocess.run([exe, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True)
    return True


def voice_over_music(voice: Path, out: Path) -> None:
    import soundfile as sf

    wave, sr = sf.read(voice, dtype="float32")
    t = np.arange(wave.size) / sr
    beat = 0.5
    notes = np.array([220.0, 277.2, 329.6, 277.2])
    freq = notes[(t // beat).astype(int) % notes.size]
    env = np.exp(-6 * (t % beat))
    loop = 0.18 * env * np.sin(2 * np.pi * freq * t)
    mix = np.clip(wave + loop, -1, 1)
    sf.write(out, mix.astype(np.float32), sr, subtype="PCM_16")


def main() -> int:
    draw_portrait().save(HERE / "portrait.png", optimize=True)
    print("wrote", HERE / "portrait.png")
    if speak(HERE / "voice.wav"):
        print("wrote", HERE / "voice.wav")
        voice_over_music(HERE / "voice.wav", HERE / "music_voice.wav")
        print("wrote", HERE / "music_voice.wav")
    else:
        print("espeak-ng not found: voice.wav not made", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
