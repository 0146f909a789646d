"""What a study exports: the winner re-measured on held-out seeds, paired with the baseline."""
