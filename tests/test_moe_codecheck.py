"""Code extraction from answers and running it in a subprocess with a timeout."""

from nbhelpers.moe import check_code_answers, extract_code, run_code

TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


def test_extract_fenced_and_unfenced_code():
    answer = "Sure!\n```python\ndef add(a, b):\n    return a + b\n```\nUse it like `add(1, 2)`."
    assert extract_code(answer) == "def add(a, b):\n    return a + b\n"
    assert extract_code("Here:\ndef f():\n    return 1") == "def f():\n    return 1\n"
    assert extract_code("```bash\nls\n```\nno python here") == ""
    assert extract_code("```\nx = 1\n```\n```py\ny = 2\n```") == "x = 1\n\ny = 2\n"


def test_run_code_pass_fail_and_timeout():
    assert run_code("def add(a, b):\n    return a + b\n", TESTS)["passed"] is True
    failed = run_code("def add(a, b):\n    return a - b\n", TESTS)
    assert failed["passed"] is False and "AssertionError" in failed["error"]
    slow = run_code("while True:\n    pass\n", timeout=0.5)
    assert slow["passed"] is False and slow["status"].startswith("timed out")
    assert run_code("", TESTS)["status"] == "no code found"


def test_check_table():
    rows = check_code_answers({"good": "```python\ndef add(a, b):\n    return a + b\n```", "none": "I can't."}, TESTS)
    assert [r["result"] for r in rows] == ["pass", "no code found"]
