"""The torch modules of composer.macro.unified (configs and costs live there)."""

from __future__ import annotations

