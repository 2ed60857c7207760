"""Samplers: one interface (:class:`Sampler`), four backends.

``hf`` (:mod:`codealign.samplers.hf`), ``vllm`` (:mod:`codealign.samplers.vllm`), ``openai``
(:mod:`codealign.samplers.openai`) and pre-generated ``file`` samples (:mod:`codealign.samplers.file`);
for training against a separate vLLM server, :mod:`codealign.samplers.vllm_server` (an ``openai`` sampler
plus the weight push). Backends import their heavy libraries lazily.
"""

from codealign.samplers.base import Completion, Sampler, SamplingParams

__all__ = ["Completion", "Sampler", "SamplingParams"]
