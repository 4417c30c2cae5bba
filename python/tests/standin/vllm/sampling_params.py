from dataclasses import dataclass
from typing import Optional


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: Optional[int] = 16
