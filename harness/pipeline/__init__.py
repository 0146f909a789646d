"""Generation: load a ``WanPipeline`` on its device, pick its scheduler and speed levers, time it."""
