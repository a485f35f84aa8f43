"""Thin files for `--config=configs/NAME.py`; the configs live in ferjax/configs/."""
