"""Training recipes, one file per method (sit, dpo, rm, raft). Each is readable top to bottom:
load config → load model and data → train (TRL) → save a model dir + log + card.
``common.py`` holds what all of them share (output dirs, LoRA, logs, model cards)."""
