"""The local chat simulator: the real pipeline against a local stand-in for Braze."""
