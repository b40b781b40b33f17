"""Audio: NSynth readers and writers, the SoundFont renderer, DDSP functions and heads, generation."""
