"""Web viewers on viser (the `[viewer]` extra): scene.py draws, replay.py replays a run folder (`view`), live.py
streams a running pipeline (`run --viewer`). viser is imported lazily: this package imports without it."""
