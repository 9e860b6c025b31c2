"""Prompts as Automatic1111 writes them, turned into text embeddings by compel.

Two separate jobs:
1. Parsing the A1111 syntax into (text, weight) pieces. `parse_prompt_attention` follows A1111's own function
   (modules/prompt_parser.py) rule for rule, so a prompt copied from A1111 or Civitai is read the same way:
       (word) x1.1   ((word)) x1.21   [word] /1.1   (word:1.5) x1.5   nesting multiplies
       \\( \\) \\[ \\] literal brackets   an unclosed bracket weights everything after it   BREAK starts a new chunk
2. Turning pieces into embeddings. compel does that (it is maintained and handles prompts longer than CLIP's 77
   tokens by encoding them in chunks); we hand it the pieces directly instead of re-writing them into compel's
   own syntax, so no escaping can go wrong. Note that compel's weighting maths differs slightly from A1111's:
   weights above 1 scale the token vectors like A1111, weights below 1 blend towards the prompt without the
   word. The same prompt gives a similar, not identical, picture in both programs.
"""

from __future__ import annotations

import re
from pathlib import Path

from nbhelpers import checks

# A1111's tokenizer for the attention syntax: escapes, brackets, ":weight)", plain text, a lone ":".
_ATTENTION = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|
\(|\[|
:\s*([+-]?[.\d]+)\s*\)|
\)|]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
ROUND = 1.1
SQUARE = 1 / 1.1
BREAK = "BREAK"  # parse result marker: ("BREAK", -1), as in A1111


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """[(text, weight), ...] exactly as A1111's parse_prompt_attention returns (as tuples, not lists)."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open and _is_number(weight):
            multiply_from(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply_from(round_open.pop(), ROUND)
        elif token == "]" and square_open:
            multiply_from(square_open.pop(), SQUARE)
        else:
            for i, part in enumerate(_BREAK.split(token)):
                if i > 0:
                    pieces.append([BREAK, -1])
                pieces.append([part, 1.0])
    # Brackets never closed still count, from where they opened to the end (A1111 does the same).
    for start in round_open:
        multiply_from(start, ROUND)
    for start in square_open:
        multiply_from(start, SQUARE)
    if not pieces:
        pieces = [["", 1.0]]
    merged = [pieces[0]]
    for piece in pieces[1:]:  # neighbours with exactly equal weights become one piece
        if merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(text, weight) for text, weight in merged]


def _is_number(text: str) -> bool:
    # A1111 crashes on "(word:.)"; here such a ":.)" is kept as plain text instead.
    try:
        float(text)
    except ValueError:
        return False
    return True


def chunks(pieces) -> list[tuple[list[str], list[float]]]:
    """Split parsed pieces at BREAK into (texts, weights) groups; empty texts dropped."""
    groups: list[tuple[list[str], list[float]]] = [([], [])]
    for text, weight in pieces:
        if text == BREAK and weight == -1:
            groups.append(([], []))
        elif text:
            groups[-1][0].append(text)
            groups[-1][1].append(weight)
    return [(texts or [""], weights or [1.0]) for texts, weights in groups]


class PromptEncoder:
    """Embeddings for A1111-syntax prompts of any length, for one pipeline (compel underneath).

    SD 1.x/2.x: one CLIP text encoder. SDXL: two, concatenated, plus the "pooled" vector of the second one
    (the same recipe as compel's CompelForSDXL).
    """

    def __init__(self, pipe):
        from compel import Compel, ReturnedEmbeddingsType
        from compel.diffusers_textual_inversion_manager import DiffusersTextualInversionManager

        self.pipe = pipe
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        manager = DiffusersTextualInversionManager(pipe)
        if self.sdxl:
            penultimate = ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED
            self.compels = [Compel(tokenizer=tok, text_encoder=enc, textual_inversion_manager=manager,
                                   returned_embeddings_type=penultimate, truncate_long_prompts=False,
                                   requires_pooled=pooled)
                            for tok, enc, pooled in ((pipe.tokenizer, pipe.text_encoder, False),
                                                     (pipe.tokenizer_2, pipe.text_encoder_2, True))]
        else:
            self.compels = [Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                   textual_inversion_manager=manager, truncate_long_prompts=False)]
        self._empty = None

    def embed(self, prompt: str):
        """(1, 77 x chunks, dim) tensor for one prompt. Each BREAK starts a fresh 77-token chunk."""
        import torch

        pieces = parse_prompt_attention(prompt)
        per_encoder = []
        with torch.no_grad():
            for compel in self.compels:
                provider = compel.conditioning_provider
                per_encoder.append(torch.cat([provider.get_embeddings_for_weighted_prompt_fragments(
                    text_batch=[texts], fragment_weights_batch=[weights], device=provider.text_encoder.device)
                    for texts, weights in chunks(pieces)], dim=1))
        return torch.cat(per_encoder, dim=-1)

    def pooled(self, prompt: str):
        """SDXL's pooled vector (of the plain text: compel does not weight it)."""
        import torch

        text = "".join(t for t, w in parse_prompt_attention(prompt) if w != -1)
        provider = self.compels[-1].conditioning_provider
        with torch.no_grad():
            return provider.get_pooled_embeddings([text], device=provider.text_encoder.device)

    def pad(self, embeds):
        """Make tensors equally long by appending empty-prompt chunks (the pipeline needs matching shapes)."""
        import torch

        longest = max(e.shape[1] for e in embeds)
        if all(e.shape[1] == longest for e in embeds):
            return embeds
        if self._empty is None:
            self._empty = self.embed("")
        return [torch.cat([e] + [self._empty] * ((longest - e.shape[1]) // self._empty.shape[1]), dim=1)
                for e in embeds]

    def __call__(self, prompt: str, negative_prompt: str = "") -> dict:
        """The keyword arguments a diffusers pipeline takes instead of `prompt` and `negative_prompt`."""
        positive, negative = self.pad([self.embed(prompt), self.embed(negative_prompt)])
        kwargs = {"prompt_embeds": positive, "negative_prompt_embeds": negative}
        if self.sdxl:
            kwargs.update(pooled_prompt_embeds=self.pooled(prompt),
                          negative_pooled_prompt_embeds=self.pooled(negative_prompt))
        return kwargs

    def token_count(self, prompt: str) -> int:
        """CLIP tokens in the prompt text (weights and brackets removed); above 75 it takes several chunks."""
        text = "".join(t for t, w in parse_prompt_attention(prompt) if w != -1)
        return len(self.pipe.tokenizer(text, add_special_tokens=False)["input_ids"])


def load_textual_inversion(pipe, path, token: str, *, allow_pickle: bool = False):
    """Load a textual-inversion embedding (a .safetensors file from training or Civitai) as `token`.

    diffusers' own loader adds the token to the tokenizer and its vector(s) to the text encoder; after that the
    token works in any prompt, weighted or not: "a photo of (<my-cat>:1.2)". Pickled `.bin`/`.pt` embeddings are
    refused unless `allow_pickle=True` (see nbhelpers.safety).
    """
    from nbhelpers import safety

    checks.text("token", token)
    path = Path(path)
    if not path.is_file():
        raise checks.ParameterError("embedding", str(path), "must be an existing .safetensors file")
    safety.check_weights(path, allow_pickle=allow_pickle, parameter="embedding")
    if token in pipe.tokenizer.get_vocab():
        raise checks.ParameterError("token", token, "must be a new token, not one the tokenizer already has")
    pipe.load_textual_inversion(str(path), token=token, use_safetensors=path.suffix == ".safetensors")
    return token
