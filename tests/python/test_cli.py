"""The command line and the documented one-liners.

Commands run as `python -m infermode` subprocesses on tiny random Llama checkpoints that
transformers writes (with a small word-level tokenizer and a ChatML template); the reference for
what they print is `CausalLM` in this process.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import infermode as im
from infermode.activations import load_activations
from infermode.checkpoints._chat import render_chat
from _tiny_models import save_llama

PROMPT = "w7 w12 w30 w5"
MAX_NEW = 12
# A plain terminal: readline then writes no escape sequences around the prompt.
TERMINAL_ENV = {**os.environ, "TERM": "dumb"}


def run(*args, stdin=None, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          input=stdin)


def infermode(*args, **kwargs):
    return run(sys.executable, "-m", "infermode", *map(str, args), **kwargs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_llama(tmp_path_factory.mktemp("cli_llama"), 96, 64, 3, 256, seed=3)


@pytest.fixture(scope="module")
def lm(model_dir):
    return im.CausalLM.from_pretrained(model_dir)


def _one_line_error(result, *names):
    """Checks a failed command printed one `infermode: error:` line naming each of `names`."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("infermode: error: "), result.stderr
    for name in names:
        assert str(name) in lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------ info


def test_info_prints_the_table():
    result = infermode("info")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    info = im.cpu_info()
    for key in ("version", "build", "cpu", "features", "isa paths", "isa in use", "kernels",
                "threads"):
        assert key in out
    assert info["isa"] in out and info["brand"] in out
    for line in ("native (cpu)  native", "xla", "mps", "cuda", "xpu"):
        assert line in out
    xla_line = next(line for line in out.splitlines() if line.strip().startswith("xla"))
    assert "no_grad" in xla_line and "version_counter" in xla_line


def test_info_lists_every_kernel_and_survives_a_closed_pipe():
    info = im.cpu_info()
    assert set(info["kernels"]) >= {"matmul_f32", "matmul_bf16", "rms_norm", "attention",
                                    "swiglu", "rope", "add", "sum_f32"}
    result = subprocess.run(f"'{sys.executable}' -m infermode info | head -n 1", shell=True,
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("version")
    assert "Traceback" not in result.stderr


def test_console_script_is_installed():
    result = run("infermode", "info")
    assert result.returncode == 0, result.stderr
    assert "isa in use" in result.stdout


def test_select_mode_xla_one_liner():
    result = run(sys.executable, "-c", "import infermode as im; print(im.select_mode('xla'))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("no_grad (") and "version_counter" in result.stdout


def test_cpu_info_describes_the_machine():
    info = im.cpu_info()
    assert info["isa"] in info["isa_supported"]
    assert info["isa_supported"][0] == "ref"
    assert set(info["kernels"]) >= {"rms_norm", "matmul_f32"}
    assert info["threads"] >= 1 and info["physical_cores"] >= 1


# -------------------------------------------------------------------------------------- generate


def test_generate_prints_causallm_greedy_text_streamed_or_not(model_dir, lm):
    want = lm.generate(PROMPT, max_new_tokens=MAX_NEW).texts[0]
    assert len(set(want.split())) > 2, "the random model should produce varied words"
    for flags in (["--stream"], ["--no-stream"]):
        result = infermode("generate", PROMPT, "--model", model_dir, "--max-new-tokens", MAX_NEW,
                           *flags)
        assert result.returncode == 0, result.stderr
        assert result.stdout == want + "\n"
    from_stdin = infermode("generate", "-", "--model", model_dir, "--max-new-tokens", MAX_NEW,
                           stdin=PROMPT + "\n")
    assert from_stdin.stdout == want + "\n"


def test_streamed_text_never_shows_half_a_character():
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers

    from infermode.cli import _TextStream

    # One token per byte, as a byte-level BPE without merges: é and 😀 span several tokens.
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = tokenizers.Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, []))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    text = "\n a é😀 b \n"
    ids = tokenizer.encode(text).ids
    for strip, want in ((False, text), (True, text.strip())):
        stream = _TextStream(tokenizer, strip)
        pieces = [stream.push(i) for i in ids] + [stream.finish()]
        assert "".join(pieces) == want
        assert not any("\ufffd" in p for p in pieces)


def test_generate_samples_reproducibly_with_a_seed(model_dir, lm):
    flags = ["--temperature", "0.9", "--top-k", "20", "--seed", "11"]
    want = lm.generate(PROMPT, max_new_tokens=MAX_NEW, temperature=0.9, top_k=20,
                       seed=11).texts[0]
    result = infermode("generate", PROMPT, "--model", model_dir, "--max-new-tokens", MAX_NEW,
                       *flags)
    assert result.stdout == want + "\n", result.stderr


def test_capture_writes_what_generate_captures(model_dir, lm, tmp_path):
    out_dir = tmp_path / "acts"
    args = ["generate", PROMPT, "--model", model_dir, "--max-new-tokens", MAX_NEW,
            "--capture", "1,final_norm", "--out", out_dir]
    result = infermode(*args)
    assert result.returncode == 0, result.stderr
    want = lm.generate(PROMPT, max_new_tokens=MAX_NEW, capture=[1, "final_norm"])
    assert result.stdout == want.texts[0] + "\n"
    acts = load_activations(out_dir)
    assert list(acts) == ["blocks.1.resid_post", "final_norm"]
    for name, array in want.activations.items():
        np.testing.assert_array_equal(acts[name], array)
    assert acts.token_ids[0, :len(want.token_ids[0])].tolist() == want.token_ids[0]

    again = infermode(*args)
    _one_line_error(again, "--out", out_dir, "--overwrite")
    assert infermode(*args, "--overwrite").returncode == 0


def test_generate_errors_name_the_argument(model_dir, tmp_path):
    bad_name = infermode("generate", PROMPT, "--model", model_dir, "--capture", "blocks.x",
                         "--out", tmp_path / "o")
    _one_line_error(bad_name, "--capture", "blocks.x")
    past_the_end = infermode("generate", PROMPT, "--model", model_dir, "--capture", "3",
                             "--out", tmp_path / "o")
    _one_line_error(past_the_end, "--capture", "0..2")
    no_out = infermode("generate", PROMPT, "--model", model_dir, "--capture", "1")
    _one_line_error(no_out, "--out")
    assert not (tmp_path / "o").exists()


def test_generate_with_the_bundled_model(monkeypatch, capsys):
    from infermode.checkpoints.gguf import bundled_model_path

    try:
        bundled_model_path()
    except FileNotFoundError as exc:  # only a missing package skips; a load failure fails
        pytest.skip(str(exc))
    bundled = im.CausalLM.from_pretrained()
    from infermode import cli

    # In this process, so the 98 MB model loads once: the command must ask for the default.
    asked = []
    monkeypatch.setattr(im.CausalLM, "from_pretrained",
                        lambda *a, **k: asked.append((a, k)) or bundled)
    prompt = "The capital of France is"
    assert cli.main(["generate", prompt, "--max-new-tokens", "8", "--no-stream"]) == 0
    assert asked == [((None,), {"threads": None})]
    assert capsys.readouterr().out == bundled.generate(prompt, max_new_tokens=8).texts[0] + "\n"


# ------------------------------------------------------------------------------------------ chat


def _chat_replies(lm, lines, max_new):
    """What `infermode chat` should answer: each turn renders the whole conversation."""
    messages, replies = [], []
    for line in lines:
        messages.append({"role": "user", "content": line})
        text = render_chat(lm.chat_template, messages, eos_token="<|im_end|>", bos_token="<s>")
        ids = lm.tokenizer.encode(text, add_special_tokens=False).ids
        reply = lm.generate([ids], max_new_tokens=max_new).texts[0].strip()
        messages.append({"role": "assistant", "content": reply})
        replies.append(reply)
    return replies


def test_chat_through_a_pipe_prints_one_reply_per_line(model_dir, lm):
    lines = ["w10 w11 w12", "w40 w41"]
    result = infermode("chat", "--model", model_dir, "--max-new-tokens", 8,
                       stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == _chat_replies(lm, lines, 8)
    assert result.stderr == ""
    one_shot = infermode("generate", lines[0], "--chat", "--model", model_dir,
                         "--max-new-tokens", 8)
    assert one_shot.stdout == result.stdout.splitlines()[0] + "\n"


@contextlib.contextmanager
def _terminal_chat(model_dir, *flags, command="chat"):
    """`infermode chat` (or another `command`) in a pseudo-terminal, at its first prompt; after
    the body it must end with exit status 0 and no traceback (the body ends the input)."""
    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "infermode", command, "--model", str(model_dir),
                                           *map(str, flags)],
                          env=TERMINAL_ENV, encoding="utf-8", timeout=60)
    try:
        child.expect_exact(">>> ")
        yield child
        child.expect(pexpect.EOF)
        assert "Traceback" not in child.before
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_in_a_terminal_answers_and_ends_on_eof(model_dir, lm):
    lines = ["w10 w11 w12", "w40 w41"]
    replies = _chat_replies(lm, lines, 8)
    with _terminal_chat(model_dir, "--max-new-tokens", 8) as child:
        for line, reply in zip(lines, replies):
            child.sendline(line)
            child.expect_exact(">>> ")
            assert child.before.replace("\r\n", "\n") == f"{line}\n{reply}\n"
        child.sendeof()


def test_ctrl_c_at_the_chat_prompt_exits_cleanly(model_dir):
    with _terminal_chat(model_dir) as child:
        child.sendintr()


def test_chat_needs_a_chat_template(tmp_path_factory):
    plain = save_llama(tmp_path_factory.mktemp("no_template"), 40, 32, 1, 64, seed=1,
                       template=None)
    result = infermode("chat", "--model", plain, stdin="w5\n")
    _one_line_error(result, plain, "chat template")


def test_long_chats_drop_the_oldest_exchanges(model_dir, lm):
    from infermode.cli import _Conversation

    conversation = _Conversation(lm, str(model_dir), system="w4")
    for i in range(30):
        conversation.messages += [{"role": "user", "content": "w9 " * 5},
                                  {"role": "assistant", "content": f"w{10 + i}"}]
    ids = conversation.ask("w50", max_new_tokens=100)
    assert len(ids) + 100 <= lm.config.max_position_embeddings
    assert conversation.messages[0] == {"role": "system", "content": "w4"}
    assert conversation.messages[-1] == {"role": "user", "content": "w50"}
    assert 3 < len(conversation.messages) < 61


# ------------------------------------------------------------------------------------- translate

LINES = ["w10 w11 w12", "w40 w41"]


@pytest.fixture(scope="module")
def translator(lm):
    return im.Translator(lm, max_new_tokens=8)


def test_translate_prints_the_translation_alone(model_dir, translator):
    want = translator.translate(LINES[0])
    assert want
    for args, stdin in (([LINES[0]], None), (["-"], LINES[0] + "\n")):
        result = infermode("translate", *args, "--model", model_dir, "--max-new-tokens", 8,
                           stdin=stdin)
        assert result.returncode == 0, result.stderr
        assert result.stdout == want + "\n" and result.stderr == ""


def test_translate_interactive_through_a_pipe_keeps_the_lines(model_dir, translator):
    lines = [LINES[0], "", LINES[1]]
    result = infermode("translate", "--interactive", "--model", model_dir, "--max-new-tokens", 8,
                       stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == translator.translate_batch(lines) + [""]
    assert result.stderr == ""


def test_translate_in_a_terminal_answers_and_ends_on_eof(model_dir, translator):
    with _terminal_chat(model_dir, "--interactive", "--max-new-tokens", 8,
                        command="translate") as child:
        for line in LINES:
            child.sendline(line)
            child.expect_exact(">>> ")
            assert child.before.replace("\r\n", "\n") == f"{line}\n{translator.translate(line)}\n"
        child.sendeof()


def test_translate_errors_name_the_argument(model_dir, tmp_path):
    missing = tmp_path / "adapters" / "best_ep1"
    for command in (["translate", "w5"], ["generate", "w5"], ["chat"]):
        result = infermode(*command, "--model", model_dir, "--adapter", missing, stdin="w5\n")
        _one_line_error(result, "--adapter", missing)
    _one_line_error(infermode("translate", "--model", model_dir), "TEXT", "--interactive")
    _one_line_error(infermode("translate", "w5", "--model", model_dir, "--device", "cuda"),
                    "--device cuda", "not available")
    _one_line_error(infermode("translate", "w5", "--prompt", "{txt}"), "--prompt", "{txt}")


def test_adapter_goes_to_from_pretrained(model_dir, lm, tmp_path, monkeypatch, capsys):
    from infermode import cli

    asked = []
    monkeypatch.setattr(im.CausalLM, "from_pretrained",
                        lambda *a, **k: asked.append((a, k)) or lm)
    model, adapter = str(model_dir), str(tmp_path)
    assert cli.main(["generate", PROMPT, "--model", model, "--adapter", adapter,
                     "--max-new-tokens", "4", "--no-stream"]) == 0
    assert asked[-1] == ((model,), {"threads": None, "adapter": adapter})
    assert cli.main(["translate", LINES[0], "--model", model, "--adapter", adapter,
                     "--max-new-tokens", "8"]) == 0
    assert asked[-1] == ((model,), {"dtype": None, "adapter": adapter, "threads": None})
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == im.Translator(lm, max_new_tokens=8).translate(LINES[0])


# ----------------------------------------------------------------------------------------- bench


def test_bench_json_gives_positive_speeds(model_dir):
    result = infermode("bench", "--model", model_dir, "--prompt-tokens", 16, "--new-tokens", 200,
                       "--repeats", 2, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for stage in ("prefill_tok_s", "decode_tok_s"):
        s = report[stage]
        assert 0 < s["min"] <= s["median"] <= s["max"] and len(s["runs"]) == 2
    assert report["prompt_tokens"] == 16 and report["new_tokens"] == 200


# ------------------------------------------------------------------------ exit codes and errors


def test_unusable_models_give_one_line_naming_the_file(tmp_path):
    corrupt = tmp_path / "random.gguf"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing.gguf", corrupt, tmp_path / "empty"):
        _one_line_error(infermode("generate", "hi", "--model", path), path)
    _one_line_error(infermode("bench", "--model", tmp_path / "missing"), "--model")


def test_unknown_flag_is_a_usage_error():
    result = infermode("generate", "hi", "--no-such-flag")
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    for args in (["--debug", "generate"], ["generate", "--debug"]):
        result = infermode(*args, "hi", "--model", tmp_path)
        assert result.returncode == 1
        assert "Traceback (most recent call last)" in result.stderr


def test_a_closed_pipe_ends_generation_quietly(model_dir):
    for flag in ("--stream", "--no-stream"):
        # `true` has exited long before the model loads: every write meets a closed pipe.
        result = subprocess.run(
            f"'{sys.executable}' -m infermode generate '{PROMPT}' --model '{model_dir}' {flag} "
            "| true; echo $((PIPESTATUS[0]))", shell=True, executable="/bin/bash",
            capture_output=True, text=True, timeout=120)
        assert result.stdout.strip() == "0" and result.stderr == ""


@pytest.fixture(scope="module")
def slow_dir(tmp_path_factory):
    """A model with a long context and no end-of-sequence token: only a signal ends it."""
    return save_llama(tmp_path_factory.mktemp("slow"), 512, 256, 4, 16384, seed=2, eos=None)


def test_ctrl_c_during_generation_exits_130(slow_dir):
    slow = slow_dir
    process = subprocess.Popen(
        [sys.executable, "-m", "infermode", "generate", "w9 w10", "--model", str(slow),
         "--stream", "--max-new-tokens", "16000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        process.stdout.read(1)  # generating
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_ctrl_c_during_a_chat_reply_returns_to_the_prompt(slow_dir):
    with _terminal_chat(slow_dir, "--max-new-tokens", 16000) as child:
        child.sendline("w9 w10")
        child.expect(r"w9 w10\r\nw\d+")  # the reply has begun
        child.sendintr()
        child.expect_exact("[reply stopped]")
        child.expect_exact(">>> ")
        child.sendeof()
