"""Experiment configs: ``python train.py --config=configs/<experiment>.py[:<arg>]``."""
