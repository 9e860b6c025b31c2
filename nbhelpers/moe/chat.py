"""Chatting with an MoE model: the chat template, streaming generation, a guardrail and self-reflection moderation.

Mixtral-Instruct's template is `<s>[INST] user [/INST] answer</s>[INST] ...`. It has no system role, so the
guardrail is put in front of the first user message (Mistral's own advice); that works with any template.
"""

from __future__ import annotations

import re
import time

from nbhelpers import checks

GUARDRAIL = ("Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, "
             "unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.")

# Short on purpose: the list goes into every moderation prompt (the tiny model has 512 positions in all).
MODERATION_CATEGORIES = {
    "illegal": "illegal activity",
    "child abuse": "harm to children",
    "hate violence harassment": "hateful, harassing or violent content",
    "malware": "code to damage or break into computers",
    "physical harm": "weapons, self-harm, dangerous acts",
    "economic harm": "gambling, risky money schemes",
    "fraud": "scams, deception, disinformation",
    "adult": "sexual content",
    "political": "political campaigning",
    "privacy": "tracking people, collecting personal data",
    "unqualified law": "tailored legal advice",
    "unqualified financial": "tailored financial advice",
    "unqualified health": "diagnosing health conditions",
}
NOT_MODERATED = "not moderated"
# The short form: one word back, safe or unsafe. What the lab model knows (the self_check lab task).
SAFETY_PROMPT = "Classify this request as safe or unsafe: {text}"
MODERATION_FORMS = ("categories", "safe_unsafe")


def chat_messages(prompt: str, history: list | None = None, guardrail: bool = False) -> list[dict]:
    """The message list for a new user turn; `history` is [(user, assistant), ...] of earlier turns."""
    checks.text("prompt", prompt)
    messages = []
    for user, answer in history or []:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    if guardrail:
        messages[0] = {"role": "user", "content": GUARDRAIL + "\n\n" + messages[0]["content"]}
    return messages


def chat_text(tokenizer, prompt: str, history: list | None = None, guardrail: bool = False) -> str:
    """The exact text the model reads, chat template applied, ending where the answer starts."""
    return tokenizer.apply_chat_template(chat_messages(prompt, history, guardrail), tokenize=False,
                                         add_generation_prompt=True)


def _streamer(tokenizer, on_text):
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer hands over text as soon as it is a whole word; we pass it on instead of printing."""

        def on_finalized_text(self, text: str, stream_end: bool = False):
            on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


# The chat template's markers. A small model sometimes writes one itself (" Sure! [/INST] ..."): the reply ends there.
TEMPLATE_MARKERS = ("[INST]", "[/INST]", "<s>", "</s>")


def _cut_at_marker(text: str) -> str:
    ends = [text.find(marker) for marker in TEMPLATE_MARKERS if marker in text]
    return text[:min(ends)].rstrip() if ends else text


class _MarkerFilter:
    """Passes streamed text on up to the first template marker; holds back a tail that may be the start of one."""

    def __init__(self, on_text):
        self.on_text, self.text, self.sent, self.stopped = on_text, "", 0, False

    def __call__(self, piece: str) -> None:
        if self.stopped:
            return
        self.text += piece
        clean = _cut_at_marker(self.text)
        self.stopped = clean != self.text
        safe = len(clean)
        if not self.stopped:  # a tail like " [/IN" may become a marker: wait for more, spaces before it included
            tail = max(clean.rfind("[", max(0, len(clean) - 8)), clean.rfind("<", max(0, len(clean) - 4)))
            if tail >= 0:
                safe = len(clean[:tail].rstrip())
        if safe > self.sent:
            self.on_text(clean[self.sent:safe])
            self.sent = safe

    def flush(self) -> None:
        clean = _cut_at_marker(self.text)
        if len(clean) > self.sent:
            self.on_text(clean[self.sent:])
            self.sent = len(clean)


def _print(text: str) -> None:
    print(text, end="", flush=True)


def generate(model, tokenizer, prompt: str, *, max_new_tokens: int = 64, temperature: float = 0.7,
             top_p: float = 0.9, seed: int | None = None, history: list | None = None, guardrail: bool = False,
             stream: bool = True, on_text=None) -> dict:
    """Answer `prompt` in the model's chat format. temperature 0 is greedy; otherwise nucleus sampling.

    Text streams to `on_text` (default: print) while it is generated, with stream=True. Returns the answer, token
    counts and speed. Fails before any model work on an empty prompt or one longer than the model's context.
    """
    import torch

    checks.text("prompt", prompt)
    checks.integer("max_new_tokens", max_new_tokens, minimum=1)
    checks.number("temperature", temperature, minimum=0.0, maximum=5.0)
    checks.number("top_p", top_p, minimum=0.01, maximum=1.0)
    text = chat_text(tokenizer, prompt, history, guardrail)
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False, verbose=False).to(model.device)
    prompt_tokens = inputs["input_ids"].shape[1]
    limit = int(getattr(model.config, "max_position_embeddings", 0)) or None
    if limit and prompt_tokens + max_new_tokens > limit:
        raise checks.ParameterError("prompt", f"{prompt_tokens} tokens + max_new_tokens {max_new_tokens}",
                                    f"at most {limit} tokens in all for this model (max_position_embeddings)")
    options = {"max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature, top_p=top_p)
    else:
        options.update(do_sample=False, temperature=None, top_p=None)
    # Stop as soon as the model starts a new turn of the template itself; its text is cut there below.
    options.update(stop_strings=["[INST]", "[/INST]"], tokenizer=tokenizer)
    shown = _MarkerFilter(on_text or _print) if stream else None
    if stream:
        options["streamer"] = _streamer(tokenizer, shown)
    if seed is not None:
        torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, **options)
    seconds = time.perf_counter() - start
    new = output[0, prompt_tokens:]
    if stream:
        shown.flush()
        if on_text is None:
            print()
    reply = _cut_at_marker(tokenizer.decode(new, skip_special_tokens=True))
    return {"prompt": prompt, "text": reply, "prompt_tokens": prompt_tokens,
            "new_tokens": int(new.numel()), "seconds": round(seconds, 3),
            "tokens_per_s": round(new.numel() / seconds, 2) if seconds > 0 else None,
            "temperature": temperature, "top_p": top_p, "guardrail": guardrail}


def compare_guardrail(model, tokenizer, prompt: str, **options) -> list[dict]:
    """The same prompt answered without and with the guardrail (same seed, so only the guardrail differs)."""
    options.setdefault("seed", 0)
    options["stream"] = False
    return [generate(model, tokenizer, prompt, guardrail=flag, **options) for flag in (False, True)]


def moderation_prompt(text: str, categories: dict | None = None, describe: bool = True) -> str:
    """Self-reflection: ask the model itself to put `text` into one listed category, or none."""
    categories = categories or MODERATION_CATEGORIES
    listing = "\n".join(f"- {name}: {meaning}" if describe else f"- {name}" for name, meaning in categories.items())
    return (f"Here are moderation categories:\n{listing}\n\nWhich one category does the text below belong to? "
            f"Reply with the category name only. If it belongs to none of them and is safe, reply '{NOT_MODERATED}'."
            f"\n\nText: {text}")


def parse_moderation(answer: str, categories: dict | None = None) -> str | None:
    """The category the answer names, "not moderated", or None when it names nothing we know.

    Models decorate their answers ("Category: **Fraud**.", "2. fraud", "Hate speech"), so: lower-case, drop
    punctuation, then take the earliest mention of a category's name or of a word only that category has
    ("hate" for "hate violence harassment"); a bare number picks the category at that place in the list.
    """
    names = list(categories or MODERATION_CATEGORIES)
    clean = re.sub(r"[^a-z0-9 ]+", " ", (answer or "").lower())
    clean = " " + re.sub(r"\s+", " ", clean).strip() + " "
    aliases = {NOT_MODERATED: NOT_MODERATED, "none": NOT_MODERATED, **{name: name for name in names}}
    words = [word for name in names for word in name.split()]
    for name in names:
        aliases.update({w: name for w in name.split() if words.count(w) == 1 and len(w) >= 4})
    found = [(clean.find(f" {alias} "), -len(alias), target) for alias, target in aliases.items()
             if f" {alias} " in clean]
    if found:
        return min(found)[2]  # the earliest mention; the longest alias where two start at the same place
    number = re.match(r"\s*(\d+)\b", clean)
    if number and 1 <= int(number.group(1)) <= len(names):
        return names[int(number.group(1)) - 1]
    return None


def moderate(model, tokenizer, text: str, categories: dict | None = None, max_new_tokens: int = 12,
             form: str = "categories") -> dict:
    """Classify `text` with the model itself (greedy); returns the raw answer and the parsed category.

    form "categories": one of the listed categories or "not moderated" (Mistral's self-reflection prompt);
    form "safe_unsafe": the one-word form, whose category is "safe", "unsafe" or None.
    """
    checks.text("text", text)
    checks.choice("form", form, MODERATION_FORMS)
    if form == "safe_unsafe":
        out = generate(model, tokenizer, SAFETY_PROMPT.format(text=text), max_new_tokens=max_new_tokens,
                       temperature=0.0, stream=False)
        words = out["text"].strip().split()
        first = words[0].strip(".,:;!*").lower() if words else ""
        return {"text": text, "answer": out["text"].strip(), "category": first if first in ("safe", "unsafe") else None}
    prompt = moderation_prompt(text, categories)
    limit = int(getattr(model.config, "max_position_embeddings", 0)) or None
    length = len(tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False, verbose=False)["input_ids"])
    if limit and length + max_new_tokens > limit:
        prompt = moderation_prompt(text, categories, describe=False)  # a short context: the names alone
    out = generate(model, tokenizer, prompt, max_new_tokens=max_new_tokens, temperature=0.0, stream=False)
    return {"text": text, "answer": out["text"].strip(), "category": parse_moderation(out["text"], categories)}


def refused(answer: str) -> bool:
    """Does the answer start by declining? (The lab MoE's refusals start with "Sorry"; real models vary more.)"""
    return bool(re.match(r"\W*(sorry|i can(no|')t|i am sorry|i'm sorry|i won't|as an ai)", answer.strip(), re.I))


def lesson_outcomes(guardrail_sides: list[dict], policy: list[dict], verdicts: list[dict], code_rows: list[dict],
                    needles: list[dict], expected_verdicts: list) -> dict:
    """What notebook 01 shows, as numbers its test can check: does the guardrail turn a reply into a refusal, does
    the policy line refuse the banned topic and only it, are the self-reflection verdicts right, does the model's
    code pass, and how many needles were found."""
    plain, guarded = guardrail_sides
    return {
        "guardrail_refuses": refused(guarded["text"]) and not refused(plain["text"]),
        "policy_refuses_banned": refused(policy[0]["text"]),
        "policy_answers_other": not refused(policy[1]["text"]),
        "moderation_correct": sum(v["category"] == e for v, e in zip(verdicts, expected_verdicts)) / len(verdicts),
        "code_passes": next(r["result"] for r in code_rows if r["answer"] == "model") == "pass",
        "needle_recall": sum(n["found"] for n in needles) / len(needles),
    }
