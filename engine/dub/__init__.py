"""Dubbing an existing video: face tracking, the lip-sync models and blending the new mouth back."""
