"""Judges of generated slices with a proven power: known-bad image sets, the judge x set table."""
