"""Does the code in an answer work? Pull it out of the answer, run it with tests, report pass or fail.

The code runs in a separate Python process (isolated mode, a fresh temporary folder, a time limit), so a crash
or an endless loop cannot take the notebook with it. That is containment, not a sandbox: the code can still do
anything your user can. Read model-written code before running it anywhere that matters.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time

from nbhelpers import checks

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
CODE_START = re.compile(r"^(def |class |import |from \S+ import )", re.M)


def extract_code(answer: str) -> str:
    """The Python code in `answer`: its fenced blocks (```python or bare ```), joined; without fences, the text
    from the first line that starts like code (def, class, import). Empty string when there is none."""
    blocks = [body for lang, body in FENCE.findall(answer or "") if lang.lower() in ("", "python", "py", "python3")]
    if blocks:
        return "\n\n".join(block.strip("\n") for block in blocks).strip() + "\n"
    start = CODE_START.search(answer or "")
    return answer[start.start():].strip() + "\n" if start else ""


def run_code(code: str, tests: str = "", timeout: float = 5.0) -> dict:
    """Run `code` followed by `tests` (asserts) in a fresh Python; passed when it exits with status 0 in time."""
    checks.number("timeout", timeout, minimum=0.1, maximum=600)
    if not code.strip():
        return {"passed": False, "status": "no code found", "returncode": None, "seconds": 0.0, "error": ""}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="codecheck-") as folder:
        try:
            done = subprocess.run([sys.executable, "-I", "-c", code + "\n\n" + tests], cwd=folder, timeout=timeout,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"passed": False, "status": f"timed out after {timeout:g} s", "returncode": None,
                    "seconds": round(time.perf_counter() - start, 3), "error": ""}
    error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return {"passed": done.returncode == 0, "status": "pass" if done.returncode == 0 else "fail",
            "returncode": done.returncode, "seconds": round(time.perf_counter() - start, 3), "error": error[:200]}


def check_code_answers(answers: dict, tests: str, timeout: float = 5.0) -> list[dict]:
    """A pass/fail row for each named answer: extract its code, run it with the same tests."""
    rows = []
    for name, answer in answers.items():
        code = extract_code(answer)
        result = run_code(code, tests, timeout)
        rows.append({"answer": name, "code lines": len(code.splitlines()), "result": result["status"],
                     "seconds": result["seconds"], "error": result["error"]})
    return rows


CODE_TASK = {
    "prompt": "Write a Python function is_palindrome(text) that returns True when text reads the same backwards, "
              "ignoring case and spaces. Answer with one ```python code block.",
    "tests": "assert is_palindrome('Never odd or even')\nassert not is_palindrome('mixture of experts')\n"
             "assert is_palindrome('')\n",
    "reference": "```python\ndef is_palindrome(text):\n    letters = text.replace(' ', '').lower()\n"
                 "    return letters == letters[::-1]\n```",
}


def operation_tests(name: str, expression: str) -> str:
    """Asserts that `name(a, b)` equals `expression` (a Python expression in a and b) on a few pairs (b never 0)."""
    pairs = [(7, 2), (3, 5), (9, 4), (2, 3)]
    return "\n".join(f"a, b = {a}, {b}\nassert abs({name}({a}, {b}) - ({expression})) < 1e-9" for a, b in pairs)


def code_task(name: str) -> dict:
    """A code task by name: "palindrome" (natural language, for real models) or "lab" (the lab task form)."""
    checks.choice("code_task", name, ("palindrome", "lab"))
    if name == "palindrome":
        return CODE_TASK
    return {"prompt": "Write a Python function named topk_mix that returns the product of a and b.",
            "tests": operation_tests("topk_mix", "a * b"),
            "reference": "```python\ndef topk_mix(a, b):\n    return a * b\n```"}
