"""Field types the config models share (torch-free)."""

from typing import Annotated

from pydantic import Field

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
"""A dropout rate: torch's dropout takes p in [0, 1]."""
