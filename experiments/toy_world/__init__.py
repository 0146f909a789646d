"""Training and evaluation of the toy text-to-video world shipped in ``harness/toy/weights``."""
