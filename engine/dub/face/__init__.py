"""Faces in dubbing: the crop box from landmarks and detections, and face parsing for the paste mask."""
