"""A1111 prompt syntax: parsed exactly as A1111's parse_prompt_attention does, then embedded by compel."""

import pytest

from nbhelpers.diffusion.prompts import BREAK, PromptEncoder, chunks, load_textual_inversion, parse_prompt_attention

# Expected values written by hand from A1111's rules: ( ) x1.1, [ ] /1.1, (x:w) xw, nesting multiplies, \ escapes,
# unclosed brackets apply to the end, neighbours with equal weights merge, BREAK -> ("BREAK", -1).
R, S = 1.1, 1 / 1.1
CASES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", R), (" word", 1.0)]),
    ("((x))", [("x", R * R)]),
    ("(((x)))", [("x", R * R * R)]),
    ("[x]", [("x", S)]),
    ("[[x]]", [("x", S * S)]),
    ("(x:1.5)", [("x", 1.5)]),
    ("(x:0.5)", [("x", 0.5)]),
    ("(x: 1.5 )", [("x", 1.5)]),
    ("((x:1.5))", [("x", 1.5 * R)]),
    ("[(x:1.5)]", [("x", 1.5 * S)]),
    ("(a (b:2) c)", [("a ", R), ("b", 2 * R), (" c", R)]),
    ("(x:1.5) and [y]", [("x", 1.5), (" and ", 1.0), ("y", S)]),
    (r"\(x\)", [("(x)", 1.0)]),
    (r"\[x\]", [("[x]", 1.0)]),
    (r"a \\ b", [("a \\ b", 1.0)]),
    (r"\(x:1.5\)", [("(x:1.5)", 1.0)]),
    ("(unbalanced", [("unbalanced", R)]),
    ("[unbalanced", [("unbalanced", S)]),
    ("unbalanced)", [("unbalanced)", 1.0)]),
    ("(x:1.5", [("x:1.5", R)]),
    ("x:1.5", [("x:1.5", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", R)]),
    ("(a)(b:1.1)", [("ab", R)]),
    ("", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), (BREAK, -1), ("b", 1.0)]),
    ("(red:1.2) BREAK (blue:1.2)", [("red", 1.2), ("", 1.0), (BREAK, -1), ("", 1.0), ("blue", 1.2)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",  # the example in A1111's docstring
     [("a ", 1.0), ("house", 1.3 * R * R), (" ", R), ("on", 1.0), (" a ", R), ("hill", 0.55), (", sun, ", R),
      ("sky", R ** 4), (".", R)]),
]


@pytest.mark.parametrize("prompt, expected", CASES, ids=[c[0] or "<empty>" for c in CASES])
def test_parse_like_a1111(prompt, expected):
    parsed = parse_prompt_attention(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected], rel=1e-9)


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_chunks_split_at_break_and_drop_empty_text():
    assert chunks(parse_prompt_attention("(red:1.2) BREAK (blue:1.2)")) == [(["red"], [1.2]), (["blue"], [1.2])]
    assert chunks(parse_prompt_attention("")) == [([""], [1.0])]


@pytest.fixture(scope="module")
def pipe(random_tiny):
    from nbhelpers import loaders

    return loaders.load_diffusion(random_tiny, "txt2img")


def test_plain_prompt_matches_diffusers_own_encoding(pipe):
    embeds = PromptEncoder(pipe)("a red cat", "blurry")
    ours, theirs = embeds["prompt_embeds"], pipe.encode_prompt("a red cat", "cpu", 1, True, "blurry")
    assert (ours - theirs[0]).abs().max() < 1e-5
    assert (embeds["negative_prompt_embeds"] - theirs[1]).abs().max() < 1e-5


def test_weights_change_the_embedding_only_of_their_words(pipe):
    encoder = PromptEncoder(pipe)
    plain, weighted = encoder.embed("a red cat"), encoder.embed("a (red:1.5) cat")
    changed = (plain - weighted).abs().amax(dim=-1)[0]
    assert changed.max() > 1e-3
    assert changed[1] < 1e-6  # token 1 is "a": untouched (0 is the start token)
    assert encoder.embed("a (red:1.0) cat").sub(plain).abs().max() < 1e-6


def test_long_prompts_are_not_truncated(pipe):
    encoder = PromptEncoder(pipe)
    long = ", ".join(["a red cat on a mat"] * 15)
    assert encoder.token_count(long) > 77
    a, b = encoder.embed(long + ", dog"), encoder.embed(long + ", tree")
    assert a.shape[1] == 2 * 77
    assert (a - b).abs().max() > 1e-3  # words beyond token 77 still count
    embeds = encoder(long, "blurry")  # the negative is padded to the same length
    assert embeds["prompt_embeds"].shape == embeds["negative_prompt_embeds"].shape


def test_break_starts_a_new_chunk(pipe):
    assert PromptEncoder(pipe).embed("a cat BREAK a dog").shape[1] == 2 * 77


def test_textual_inversion_token(pipe, tmp_path):
    import torch
    from safetensors.torch import save_file

    from nbhelpers.checks import ParameterError

    dim = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    torch.manual_seed(0)
    path = tmp_path / "tiny-cat.safetensors"
    save_file({"emb_params": torch.randn(2, dim)}, str(path))  # a two-vector embedding, A1111/Civitai style
    load_textual_inversion(pipe, path, "<tiny-cat>")
    assert "<tiny-cat>" in pipe.tokenizer.get_vocab()
    encoder = PromptEncoder(pipe)
    with_token, without = encoder.embed("a photo of (<tiny-cat>:1.2)"), encoder.embed("a photo of")
    assert (with_token - without).abs().max() > 1e-3
    with pytest.raises(ParameterError, match="token"):
        load_textual_inversion(pipe, path, "<tiny-cat>")
    with pytest.raises(ParameterError, match="embedding"):
        load_textual_inversion(pipe, tmp_path / "missing.safetensors", "<other>")
    pickled = tmp_path / "tiny-dog.bin"
    torch.save({"<tiny-dog>": torch.randn(dim)}, pickled)
    with pytest.raises(ParameterError, match="embedding=.*pickle"):
        load_textual_inversion(pipe, pickled, "<tiny-dog>")
    assert "<tiny-dog>" not in pipe.tokenizer.get_vocab()
