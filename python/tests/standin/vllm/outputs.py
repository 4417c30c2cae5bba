from dataclasses import dataclass, field
from typing import List


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: List[int] = field(default_factory=list)


@dataclass
class RequestOutput:
    request_id: str
    prompt: str
    prompt_token_ids: List[int]
    outputs: List[CompletionOutput]
    finished: bool = True
