"""bitnet-graph: BitNet b1.58 ternary language models on CPUs, bit-identical to bitnet.cpp."""

import os
from typing import Any, Iterator, Optional, Sequence, Union

import numpy
import numpy.typing

__version__: str

class Model:
    """A BitNet model loaded from a GGUF file.

    Bad arguments raise ValueError; an unreadable or unsupported file raises OSError.
    The GIL is released while the engine computes; one Model may be used from many threads.
    """

    def __init__(
        self,
        path: Optional[Union[str, os.PathLike[str]]] = None,
        *,
        hf: Optional[str] = None,
        threads: Optional[int] = None,
        backend: str = "auto",
        ctx_size: Optional[int] = None,
        lm_head: str = "exact",
        parallel: int = 1,
    ) -> None:
        """Loads `path`, or `hf="owner/name[:FILE]"` through the Hugging Face cache.

        threads=None: one per core. ctx_size=None: the model's training context.
        lm_head: "exact" (bitnet.cpp's numerics), "q8" or "q6k". parallel: sequences
        generate_batch runs at once.
        """

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of `text` (BOS first when add_bos; special parses `<|eot_id|>`-like text)."""

    def detokenize(self, ids: Sequence[int]) -> str:
        """The text of token ids; ids outside the vocabulary raise ValueError."""

    def generate(
        self,
        prompt: str,
        max_tokens: Optional[int] = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
        chat: bool = False,
        system: Optional[str] = None,
    ) -> str:
        """The completion of `prompt` (temperature <= 0: greedy; max_tokens=None: until the end).

        Ctrl-C raises KeyboardInterrupt and cancels the generation.
        """

    def stream(
        self,
        prompt: str,
        max_tokens: Optional[int] = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
        chat: bool = False,
        system: Optional[str] = None,
    ) -> Stream:
        """Like generate, yielding the text piece by piece as it is generated."""

    def generate_batch(
        self,
        prompts: Sequence[str],
        max_tokens: Optional[int] = 128,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        seed: Optional[int] = None,
        stop: Optional[Union[str, Sequence[str]]] = None,
        chat: bool = False,
        system: Optional[str] = None,
    ) -> list[str]:
        """The completions of many prompts, run together by continuous batching, in order."""

    def logits(self, ids: Sequence[int]) -> numpy.typing.NDArray[numpy.float32]:
        """The logits of every position of `ids`, shape [len(ids), n_vocab] (no BOS added)."""

    @property
    def info(self) -> dict[str, Any]:
        """Architecture, sizes, tensor types, backends, kernels in use, threads, chat format."""

class Stream(Iterator[str]):
    """The iterator Model.stream returns."""

    def __iter__(self) -> Stream: ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Ends the stream now, cancelling the generation."""
