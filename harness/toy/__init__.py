"""The toy world: a trained text-to-video model shipped in ``weights/``, its renderer and adherence metric."""
