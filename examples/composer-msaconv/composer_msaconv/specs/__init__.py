"""Preset specs of this plugin (a folder composer searches for preset names)."""
