"""Mixture-of-experts helpers for 01_moe_inference: see the router, count the parameters, watch the routing, chat.

- router:     `sparse_moe_forward` (the MoE block written out by hand) and `route` (softmax, top-k, renormalise)
- layouts:    where each supported architecture keeps its router and experts (Mixtral, Granite MoE, OLMoE)
- accounting: total, expert and active-per-token parameters from a config alone, on the meta device
- routing:    capture which experts each token picks in each layer, and the pictures of it
- balance:    the load-balancing (auxiliary) loss from router logits
- context:    how much KV cache fits on a GPU, and a needle-in-a-haystack test
- chat:       chat template, streaming generation, guardrail and self-reflection moderation
- codecheck:  pull code out of an answer and run it in a subprocess with a timeout
- panel:      an ipywidgets chat panel (ipywidgets 7.7.1 on Colab and 8.x)

Importing this package is cheap: torch and transformers load when a function needs them.
"""

from nbhelpers.lazy import exports

_LAZY = {
    "sparse_moe_forward": "router", "route": "router",
    "layout_of": "layouts", "moe_blocks": "layouts", "register_layout": "layouts", "SUPPORTED": "layouts",
    "load_config": "accounting", "count_parameters": "accounting", "memory_plan": "accounting",
    "capture_routing": "routing", "same_first_expert_rate": "routing", "plot_expert_heatmap": "routing",
    "plot_expert_load": "routing", "plot_same_first_expert": "routing", "plot_language_loads": "routing",
    "load_balancing_loss": "balance", "balanced_logits": "balance", "collapsed_logits": "balance",
    "kv_cache_bytes": "context", "kv_plan": "context", "needle_in_haystack": "context",
    "GUARDRAIL": "chat", "chat_messages": "chat", "chat_text": "chat", "generate": "chat",
    "compare_guardrail": "chat", "moderate": "chat", "parse_moderation": "chat", "lesson_outcomes": "chat",
    "extract_code": "codecheck", "run_code": "codecheck", "check_code_answers": "codecheck", "code_task": "codecheck",
    "ChatPanel": "panel", "chat_examples": "panel", "markdown_table": "show", "save_figure": "show",
}


__getattr__, __dir__ = exports(__name__, _LAZY)
