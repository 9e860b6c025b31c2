"""A chat panel made of ipywidgets: type, press Send, watch the answer stream in.

Written for both ipywidgets 7.7.1 (what Colab ships; version 8 widgets do not render there) and 8.x: it uses only
widgets and attributes that exist in both (Textarea, Button, sliders, Checkbox, HTML, HBox/VBox), and streams by
updating an HTML widget's value rather than printing into an Output widget. Displaying it never blocks, so a
papermill run passes straight over it; the callbacks are plain methods, tested by calling them.
"""

from __future__ import annotations

import html

from nbhelpers.moe.chat import generate


def chat_examples(examples: dict, first: str | None = None) -> list[str]:
    """The prompts of a profile's chat examples (`profile.defaults["chat"]`), `first` first. For the lab MoE (tiny)
    these are its task forms, the only prompts it answers well: translate, a policy line, classify, code."""
    from nbhelpers.moe.chat import SAFETY_PROMPT, moderation_prompt
    from nbhelpers.moe.codecheck import code_task

    texts = examples.get("moderation_texts", [])
    if examples.get("moderation_form") == "safe_unsafe":
        moderation = [SAFETY_PROMPT.format(text=text) for text in texts]
    else:
        moderation = [moderation_prompt(text) for text in texts[:1]]
    found = [first, examples.get("prompt"), *examples.get("policy_prompts", []), *moderation,
             code_task(examples["code_task"])["prompt"] if examples.get("code_task") else None]
    return list(dict.fromkeys(text for text in found if text))


class ChatPanel:
    def __init__(self, model, tokenizer, *, max_new_tokens: int = 64, temperature: float = 0.7, top_p: float = 0.9,
                 guardrail: bool = True, examples: list[str] | None = None):
        import ipywidgets as w

        self.model, self.tokenizer = model, tokenizer
        self.history: list[tuple[str, str]] = []
        examples = list(examples or [])
        self.prompt = w.Textarea(value=examples[0] if examples else "", placeholder="Ask something, then press Send",
                                 layout=w.Layout(width="98%"))
        # An example picked here goes into the prompt box; the first is there already.
        self.examples = w.Dropdown(options=examples, value=examples[0] if examples else None,
                                   description="examples", layout=w.Layout(width="98%"))
        self.examples.observe(lambda change: setattr(self.prompt, "value", change["new"] or ""), names="value")
        # "initial": each label as wide as its text (the default 80 px cut "temperature" to "temperat...")
        label = {"style": {"description_width": "initial"}}
        self.temperature = w.FloatSlider(value=temperature, min=0.0, max=1.5, step=0.05, description="temperature",
                                         **label)
        self.top_p = w.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05, description="top_p", **label)
        self.max_new_tokens = w.IntSlider(value=max_new_tokens, min=8, max=1024, step=8, description="new tokens",
                                          **label)
        self.guardrail = w.Checkbox(value=guardrail, description="guardrail", **label)
        self.send_button = w.Button(description="Send", button_style="primary")
        self.clear_button = w.Button(description="Clear")
        self.transcript = w.HTML(value="")
        self.status = w.HTML(value="")
        self.send_button.on_click(self.on_send)
        self.clear_button.on_click(self.on_clear)
        controls = w.HBox([self.temperature, self.top_p, self.max_new_tokens, self.guardrail],
                          layout=w.Layout(flex_flow="row wrap"))  # narrow screens: the sliders wrap
        self.widget = w.VBox(([self.examples] if examples else []) + [
            self.transcript, self.prompt, controls, w.HBox([self.send_button, self.clear_button]), self.status])

    def _render(self, pending: str | None = None, answer: str = "") -> None:
        turns = self.history + ([(pending, answer)] if pending is not None else [])
        self.transcript.value = "".join(
            f"<p><b>You:</b> {html.escape(user)}<br><b>Model:</b> {html.escape(reply)}</p>" for user, reply in turns)

    def on_send(self, _button=None) -> dict | None:
        """Answer the text in the prompt box, streaming it into the transcript; errors show in the status line."""
        text = self.prompt.value
        if not text.strip():
            self.status.value = "<i>Type a prompt first.</i>"
            return None
        pieces: list[str] = []

        def on_text(piece: str) -> None:
            pieces.append(piece)
            self._render(text, "".join(pieces))

        self.send_button.disabled = True
        self.status.value = "<i>generating...</i>"
        try:
            out = generate(self.model, self.tokenizer, text, max_new_tokens=int(self.max_new_tokens.value),
                           temperature=float(self.temperature.value), top_p=float(self.top_p.value),
                           history=self.history, guardrail=bool(self.guardrail.value), on_text=on_text)
        except Exception as error:  # show it in the panel: an exception in a widget callback is easy to miss
            self.status.value = f"<b>error:</b> {html.escape(str(error))}"
            return None
        finally:
            self.send_button.disabled = False
        self.history.append((text, out["text"]))
        self.prompt.value = ""
        self._render()
        self.status.value = f"{out['new_tokens']} tokens in {out['seconds']:.1f} s ({out['tokens_per_s']} tok/s)"
        return out

    def on_clear(self, _button=None) -> None:
        self.history.clear()
        self._render()
        self.status.value = ""

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
