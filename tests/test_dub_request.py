"""The dubbing request: defaults, normalisation, and one-sentence refusals."""
from __future__ import annotations

import math

import pytest

from engine.dub.request import DubRequest, validate_dub_request
from engine.errors import InputError


def test_defaults_and_normalisation():
    req = validate_dub_request(DubRequest(video="a/v.mp4", audio="b/a.wav", parsing_mode=" RAW ",
                                          fps_rule="Official", batch_size=4.0, seed=7))
    assert (req.parsing_mode, req.fps_rule, req.batch_size, req.seed) == ("raw", "official", 4, 7)
    assert isinstance(req.batch_size, int)
    base = validate_dub_request(DubRequest(video="v.mp4", audio="a.wav"))
    assert (base.model, base.fps_rule, base.extra_margin, base.cheek_left, base.cheek_right, base.batch_size,
            base.when_audio_longer, base.when_video_longer) == ("musetalk-1.5", "exact", 10, 90, 90, 8,
                                                                "pingpong", "cut")
    settings = DubRequest(video="/x/y/clip.mp4", audio="voice.wav", out_path="/o/out.mp4").settings()
    assert settings["video"] == "clip.mp4" and "out_path" not in settings and settings["mode"] == "dub"
    assert "sound" not in settings                          # the voice is the sound
    assert DubRequest(video="v", audio="a", sound="/x/mix.wav").settings()["sound"] == "mix.wav"
    assert validate_dub_request(DubRequest(video="v", audio="a", sound=" ")).sound is None
    assert DubRequest.from_dict({**base.to_dict(), "unknown": 1}) == base


@pytest.mark.parametrize("field,value,words", [
    ("batch_size", math.nan, "finite"), ("batch_size", math.inf, "finite"), ("batch_size", 0, "between 1"),
    ("batch_size", 2.5, "whole number"), ("bbox_shift", 1000, "between -100"), ("extra_margin", -1, "between 0"),
    ("cheek_left", float("-inf"), "finite"), ("cheek_right", 300, "between 0"), ("seed", -3, "between 0"),
    ("seed", "abc", "whole number"), ("seed", True, "whole number"), ("model", "wav2lip", "musetalk-1.5"),
    ("fps_rule", "rounded", "exact, official"), ("parsing_mode", "mouth", "jaw, raw, neck"),
    ("when_audio_longer", "loop", "pingpong, bounce, freeze"), ("when_video_longer", None, "cut, keep"),
    ("video", "", "No video"), ("audio", None, "No audio"),
])
def test_bad_values_are_refused_with_one_sentence(field, value, words):
    req = DubRequest(video="v.mp4", audio="a.wav")
    setattr(req, field, value)
    with pytest.raises(InputError) as err:
        validate_dub_request(req)
    text = str(err.value)
    assert words in text and "\n" not in text and field.split("_")[0] in text.lower()
