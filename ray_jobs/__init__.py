"""Thin Ray entry points: `python -m ray_jobs.<job> --config configs/x.yaml key=value`."""
