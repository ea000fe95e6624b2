"""The trained voice in use: :mod:`.synth` speaks, :mod:`.export` packs a run, :mod:`.evaluate`
measures it, and :mod:`.serve` puts it behind an OpenAI-compatible speech API.
"""
