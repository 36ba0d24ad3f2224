"""The local backend: a model loaded in this process (``HFEngine``), its requests batched (``batcher.Batcher``).

A request's ``messages`` (system / developer / user / assistant turns) are rendered with the tokenizer's chat
template and a generation prompt; the rendered text goes to ``HFEngine.generate`` as is (its ``raw`` template).
A tokenizer without a chat template gets the conversation as ``Role: text`` lines in the Alpaca frame
(``models.format_prompt``). Requests share a ``generate`` call only when their settings (max tokens, temperature,
top-p, seed, n) are equal; the engine then decodes them together (continuous batching).

Token counts: ``prompt_tokens`` is the rendered prompt's length; ``completion_tokens`` re-tokenizes each answer (the
engine returns text; decoding and re-encoding may differ by a token or two, capped at ``max_tokens``), and an answer
that counts ``max_tokens`` ends with ``finish_reason: "length"``. A prompt that does not leave
``max_tokens`` of room in the model's context (``max_position_embeddings``) is a 400 (``context_length_exceeded``);
a request without ``max_tokens`` gets the server's default (``--max-new-tokens``) or the room left, if less.
"""

from __future__ import annotations

import copy
from typing import Any

from safealign.errors import SafealignError
from safealign.generate import GenParams, HFEngine
from safealign.serve.batcher import Batcher
from safealign.serve.protocol import Completion, RequestError, cut_at_stops


class LocalBackend:
    def __init__(self, engine: HFEngine, *, max_batch: int = 32, window_s: float = 0.005, precision: str = "auto"):
        self.engine, self.max_batch, self.precision = engine, max_batch, precision
        # the event loop renders and counts with its own copy: the model thread uses the engine's tokenizer
        self.tokenizer = copy.deepcopy(engine.tokenizer)
        self.context = getattr(engine.model.config, "max_position_embeddings", None)
        self.batcher = Batcher(self._generate, max_batch=max_batch, window_s=window_s, name="model")
        self.name = engine.name

    def render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        from safealign.models import format_prompt

        if len(messages) == 1 and messages[0]["role"] == "user":
            return format_prompt(self.tokenizer, messages[0]["content"], template="alpaca")
        talk = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)
        return format_prompt(self.tokenizer, talk, template="alpaca")

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def params(self, opts: dict[str, Any]) -> GenParams:
        try:
            return GenParams(max_new_tokens=opts["max_tokens"], temperature=opts["temperature"],
                             top_p=opts["top_p"], seed=opts["seed"], num_samples=opts["n"],
                             batch_size=self.max_batch, template="raw", precision=self.precision)
        except SafealignError as e:
            param = "n" if e.field == "num_samples" else e.field
            raise RequestError(400, e.message.replace("num_samples", "n"), param=param) from None

    def warm_up(self) -> None:
        self.engine.generate([self.render([{"role": "user", "content": "Hi"}])],
                             GenParams(max_new_tokens=2, template="raw", precision=self.precision))

    def _generate(self, key: Any, items: list[tuple[str, GenParams]]) -> list[list[str]]:
        return self.engine.generate([text for text, _ in items], items[0][1])

    async def complete(self, messages: list[dict[str, str]], opts: dict[str, Any]) -> Completion:
        text = self.render(messages)
        prompt_tokens = self.count(text)
        if self.context and not opts["max_tokens_given"]:  # the server's default: as much as the context leaves
            opts = {**opts, "max_tokens": max(1, min(opts["max_tokens"], self.context - prompt_tokens))}
        params = self.params(opts)
        if self.context and prompt_tokens + params.max_new_tokens > self.context:
            raise RequestError(400, f"the prompt is {prompt_tokens} tokens and max_tokens {params.max_new_tokens}; "
                               f"the model's context is {self.context}", param="messages",
                               code="context_length_exceeded")
        key = tuple(sorted(params.as_dict().items()))
        answers = await self.batcher.submit(key, (text, params))
        texts, reasons, used = [], [], 0
        for answer in answers:
            n = min(self.count(answer), params.max_new_tokens)  # re-tokenized; decoding may not round-trip exactly
            used += n
            answer, stopped = cut_at_stops(answer, opts["stop"])
            texts.append(answer)
            reasons.append("length" if n >= params.max_new_tokens and not stopped else "stop")
        return Completion(texts, reasons, prompt_tokens=prompt_tokens, completion_tokens=used)
