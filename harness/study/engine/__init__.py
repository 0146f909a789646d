"""The search engine: the space, samplers, pruning and floors, and the life of one trial (objective)."""
