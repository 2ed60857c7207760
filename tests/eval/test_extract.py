"""Code extraction on completions shaped like real model output."""

from codealign.extract import extract_code, humaneval_program

CHATTY = '''To solve this, we sort the array and take prefix sums.

Here is a first attempt:

```python
n = int(input())
print(n)
```

That misses the edge case, so here is the corrected solution:

```python
import sys

def main():
    data = sys.stdin.read().split()
    n = int(data[0])
    print(sum(map(int, data[1:n + 1])))

main()
```

For the sample input

```
3
1 2 3
```

it prints `6`.
'''


def test_last_python_block_wins_over_earlier_blocks_and_untagged_sample_io():
    code = extract_code(CHATTY)
    assert code.startswith("import sys\n") and code.endswith("main()\n")
    assert "1 2 3" not in code


def test_untagged_block_is_used_when_no_block_is_tagged_python():
    assert extract_code("Solution:\n```\nprint(input()[::-1])\n```\n") == "print(input()[::-1])\n"
    assert extract_code("```cpp\nint main(){}\n```") == "int main(){}\n"


def test_unclosed_final_block_counts_when_the_model_ran_out_of_tokens():
    text = "Sure.\n```python\nfor _ in range(int(input())):\n    print(1)\n"
    assert extract_code(text) == "for _ in range(int(input())):\n    print(1)\n"


def test_tags_are_case_insensitive_and_indented_fences_are_recognised():
    text = "1. Code:\n   ```Python3\n   print(1)\n   ```\n"
    assert extract_code(text) == "   print(1)\n"


def test_raw_code_without_fences_is_taken_when_it_parses():
    raw = "def f(a):\n    return a * 2\n\nprint(f(int(input())))\n"
    assert extract_code(raw) == raw
    assert extract_code("I think the answer is to use dynamic programming.") is None
    assert extract_code("none") is None and extract_code("42\n") is None  # parse, but are not programs
    assert extract_code("print(42)") == "print(42)\n"
    assert extract_code("") is None
    assert extract_code("```python\n\n```") is None  # an empty block is no program


def test_humaneval_continuation_is_cut_at_the_first_top_level_line():
    prompt = 'def add(a, b):\n    """Add two numbers."""\n'
    completion = "    return a + b\n\n\ndef test():\n    assert add(1, 2) == 3\n\nprint(test())\n"
    assert humaneval_program(prompt, completion, "add") == prompt + "    return a + b\n\n\n"
    # A chat-style answer that restates the whole function stands alone.
    chat = "```python\ndef add(a, b):\n    return a + b\n```"
    assert humaneval_program(prompt, chat, "add") == "def add(a, b):\n    return a + b\n"
    assert humaneval_program(prompt, "    return (a +\n", "add") is None


def test_text_the_parser_gives_up_on_is_no_program_not_a_crash():
    """Class 10 (#9): ast.parse raises MemoryError / RecursionError on these; that killed the whole eval."""
    for text in ("the " * 2000, "+".join(["1"] * 200_000), "-" * 100_000 + "1"):
        assert extract_code(text) is None
    assert humaneval_program("def f(x):\n", "    return " + "(" * 5000 + "x" + ")" * 5000 + "\n", "f") is None
