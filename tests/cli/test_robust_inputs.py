"""Bad input through the real CLI: one clear line on stderr, exit ≠ 0, never a traceback.

Everything runs in-process through typer's runner (the behaviour is the CLI's, not the
process's); the checks live in ``helpers_robust.assert_one_line_error``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from corpus import pseudo_shakespeare
from helpers_robust import (
    TINY_MODEL,
    assert_one_line_error,
    invoke,
    train_tiny,
    write_text,
)
from typer.testing import CliRunner

from chargpt_tui.checkpoint import load_checkpoint
from chargpt_tui.cli import app
from chargpt_tui.data import check_text_file
from chargpt_tui.errors import DataError


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained checkpoint shared by the read-only tests of this module."""
    root = tmp_path_factory.mktemp("trained")
    return train_tiny(root / "run", write_text(root))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_text(tmp_path)


def train_args(data: Path | str, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), *TINY_MODEL, "--max-iters", "2", "--out", str(out),
            *extra]


# -- --data ----------------------------------------------------------------------------------


def test_data_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    assert_one_line_error(invoke(*train_args(missing, tmp_path / "r")), "not found", str(missing))


def test_data_path_that_is_a_folder(tmp_path: Path) -> None:
    assert_one_line_error(invoke(*train_args(tmp_path, tmp_path / "r")), "folder", str(tmp_path))


def test_data_path_whose_read_fails(tmp_path: Path) -> None:
    # /proc/self/mem exists and opens (even for root), but reading offset 0 fails with EIO:
    # a real read error that chmod 000 cannot give when the tests run as root.
    mem = Path("/proc/self/mem")
    if not mem.exists():
        pytest.skip("needs Linux /proc")
    line = assert_one_line_error(invoke(*train_args(mem, tmp_path / "r")), "cannot read",
                                 str(mem))
    assert "error" in line.lower()


def test_data_file_without_read_permission(corpus: Path) -> None:
    """A real EACCES. Root reads files whatever their mode, so under root (as in CI) the read
    happens in a forked child that first drops to the unprivileged user 'nobody'."""
    corpus.chmod(0)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, try the read, report the error text, exit at once
        try:
            os.close(reader)
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            try:
                check_text_file(corpus)
                message = "read succeeded"
            except DataError as error:
                message = str(error)
            os.write(writer, message.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message.startswith(f"cannot read {corpus}: Permission denied"), message
    assert "\n" not in message


def test_data_path_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    # Reading a FIFO with no writer would block forever: it must be refused up front.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert_one_line_error(invoke(*train_args(fifo, tmp_path / "r")), "not a regular file",
                          str(fifo))


def test_empty_data_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert_one_line_error(invoke(*train_args(empty, tmp_path / "r")), "empty", str(empty))


def test_data_too_short_for_the_block_size_names_the_sizes(tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, that is the question\n" * 2)  # 82 characters
    line = assert_one_line_error(
        invoke(*train_args(short, tmp_path / "r", "--block-size", "16")), "block size 16")
    assert "82 characters" in line and "73 train / 9 validation" in line


def test_binary_data_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "model.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    assert_one_line_error(invoke(*train_args(binary, tmp_path / "r")), "binary", str(binary))


def test_non_utf8_file_is_refused_with_an_encoding_hint(tmp_path: Path) -> None:
    latin = tmp_path / "latin.txt"
    latin.write_bytes(pseudo_shakespeare(120).replace("king", "kïng").encode("latin-1"))
    assert_one_line_error(invoke(*train_args(latin, tmp_path / "r")), "not valid utf-8",
                          "--encoding")
    # ... and the explicit encoding is the way out: it trains on the right characters.
    ok = invoke(*train_args(latin, tmp_path / "r", "--encoding", "latin-1", "--json"))
    assert ok.exit_code == 0, ok.stderr
    assert "ï" in load_checkpoint(tmp_path / "r")["vocab"]


def test_unknown_encoding(corpus: Path, tmp_path: Path) -> None:
    assert_one_line_error(invoke(*train_args(corpus, tmp_path / "r", "--encoding", "klingon")),
                          "unknown text encoding", "klingon")


@pytest.mark.parametrize("url", ["ftp://example.com/a.txt", "file:///etc/passwd"])
def test_data_urls_other_than_http_are_refused(url: str, tmp_path: Path) -> None:
    assert_one_line_error(invoke(*train_args(url, tmp_path / "r")), "unsupported URL scheme")


# -- model and training options: refused before any data is read ------------------------------

# The data path does not exist: an error about the option proves it was checked first.
@pytest.mark.parametrize(("options", "needle"), [
    (["--n-embd", "30", "--n-head", "4"], "not divisible by n-head"),
    (["--n-layer", "0"], "n-layer must be at least 1"),
    (["--n-head", "-2"], "n-head must be at least 1"),
    (["--block-size", "0"], "block-size must be at least 1"),
    (["--batch-size", "0"], "batch-size must be at least 1"),
    (["--max-iters", "-5"], "max-iters must be at least 1"),
    (["--eval-iters", "0"], "eval-iters must be at least 1"),
    (["--eval-interval", "0"], "eval-interval must be at least 1"),
    (["--learning-rate", "0"], "learning-rate must be a positive number"),
    (["--learning-rate", "-0.1"], "learning-rate must be a positive number"),
    (["--learning-rate", "inf"], "learning-rate must be a positive number"),
    (["--dropout", "1.5"], "dropout 1.5 is outside"),
    (["--attention", "bogus"], "attention must be one of"),
    (["--preset", "bogus"], "unknown preset 'bogus'"),
    (["--seed", "-1"], "seed must be between"),
    (["--lr-decay-iters", "0"], "lr-decay-iters must be at least 1"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--device", "quantum"], "unknown device 'quantum'"),
])
def test_bad_training_options_fail_before_any_work(options: list[str], needle: str,
                                                   tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert_one_line_error(invoke(*train_args(tmp_path / "missing.txt", out, *options)), needle)
    assert not out.exists()


def test_block_size_larger_than_the_data(corpus: Path, tmp_path: Path) -> None:
    size = len(corpus.read_text())
    line = assert_one_line_error(
        invoke(*train_args(corpus, tmp_path / "r", "--block-size", str(size))), "too short",
        f"block size {size}")
    assert f"{size} characters" in line


def test_cuda_requested_without_cuda(monkeypatch: pytest.MonkeyPatch, corpus: Path,
                                     tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert_one_line_error(invoke(*train_args(corpus, tmp_path / "r", "--device", "cuda")),
                          "CUDA is not available", "--device cpu")


def test_cuda_device_index_that_does_not_exist(monkeypatch: pytest.MonkeyPatch, corpus: Path,
                                               tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert_one_line_error(invoke(*train_args(corpus, tmp_path / "r", "--device", "cuda:3")),
                          "cuda:3", "1 CUDA device")


def test_out_of_gpu_memory_suggests_a_smaller_batch(monkeypatch: pytest.MonkeyPatch,
                                                     corpus: Path, tmp_path: Path) -> None:
    from chargpt_tui.train import Trainer

    def out_of_memory(self: Trainer, progress: float | None = None) -> float:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(Trainer, "train_step", out_of_memory)
    assert_one_line_error(invoke(*train_args(corpus, tmp_path / "r")), "out of GPU memory",
                          "--batch-size")


def test_out_under_a_regular_file(corpus: Path, tmp_path: Path) -> None:
    # A path below a file cannot be created, even by root (a read-only disk acts the same).
    out = corpus / "run"
    assert_one_line_error(invoke(*train_args(corpus, out)), "cannot create run folder", str(out))


def test_new_run_refuses_to_overwrite_an_existing_checkpoint(trained: Path, corpus: Path) -> None:
    before = trained.read_bytes()
    assert_one_line_error(invoke(*train_args(corpus, trained.parent)), "already holds a checkpoint",
                          "--resume")
    assert trained.read_bytes() == before


# -- checkpoints -------------------------------------------------------------------------------


def sample_args(checkpoint: Path, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(checkpoint), "--max-new-tokens", "20", "--device",
            "cpu", *extra]


def test_checkpoint_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "ckpt.pt"
    assert_one_line_error(invoke(*sample_args(missing)), "no checkpoint at", str(missing))


def test_truncated_checkpoint(trained: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "ckpt.pt"
    truncated.write_bytes(trained.read_bytes()[: trained.stat().st_size // 2])
    assert_one_line_error(invoke(*sample_args(truncated)), "damaged or not a checkpoint",
                          str(truncated))


def test_text_file_as_checkpoint(corpus: Path) -> None:
    assert_one_line_error(invoke(*sample_args(corpus)), "damaged or not a checkpoint", str(corpus))


def test_torch_file_that_is_not_a_chargpt_checkpoint(tmp_path: Path) -> None:
    other = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, other)
    assert_one_line_error(invoke(*sample_args(other)), "neither a chargpt-tui nor a nanoGPT",
                          "it has state_dict", str(other))


def tampered(trained: Path, target: Path, **changes: object) -> Path:
    payload = torch.load(trained, weights_only=True)
    for key, value in changes.items():
        if key in payload["model_config"]:
            payload["model_config"][key] = value
        else:
            payload[key] = value
    torch.save(payload, target)
    return target


def test_checkpoint_whose_weights_do_not_fit_its_shape(trained: Path, tmp_path: Path) -> None:
    bad = tampered(trained, tmp_path / "ckpt.pt", n_embd=32)
    line = assert_one_line_error(invoke(*sample_args(bad)), str(bad), "does not match")
    assert "(1, 16)" in line or "16" in line


def test_checkpoint_with_a_model_part_this_version_removed(trained: Path, tmp_path: Path) -> None:
    payload = torch.load(trained, weights_only=True)
    payload["model_config"]["bigram"] = True  # a chargpt-tui 0.1.0 run with the bigram table on
    torch.save(payload, tmp_path / "ckpt.pt")
    result = invoke(*sample_args(tmp_path / "ckpt.pt"))
    assert_one_line_error(result, str(tmp_path / "ckpt.pt"), "bigram=True", "chargpt-tui 0.1.0")
    assert result.exit_code == 2


def test_checkpoint_with_a_different_vocabulary(trained: Path, tmp_path: Path) -> None:
    vocab = torch.load(trained, weights_only=True)["vocab"]
    bad = tampered(trained, tmp_path / "ckpt.pt", vocab=vocab + "ÆØÅ")
    assert_one_line_error(invoke(*sample_args(bad)), str(bad), f"{len(vocab) + 3} characters")


def test_checkpoint_from_a_newer_format(trained: Path, tmp_path: Path) -> None:
    newer = tampered(trained, tmp_path / "ckpt.pt", format_version=99)
    assert_one_line_error(invoke(*sample_args(newer)), str(newer), "newer chargpt-tui",
                          "format 99")


class CreatesMarkerWhenUnpickled:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_checkpoint_with_a_code_running_pickle_is_refused(trained: Path, tmp_path: Path) -> None:
    payload = torch.load(trained, weights_only=True)
    marker = tmp_path / "pwned"
    payload["extra"] = CreatesMarkerWhenUnpickled(marker)
    evil = tmp_path / "ckpt.pt"
    torch.save(payload, evil)

    assert_one_line_error(invoke(*sample_args(evil)), "refused", str(evil))
    assert not marker.exists()
    # The payload is a real threat: the unsafe loader would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_resume_with_a_changed_model_shape(trained: Path, corpus: Path) -> None:
    result = invoke("train", "--resume", str(trained.parent), "--data", str(corpus),
                    "--n-embd", "32", "--device", "cpu")
    assert_one_line_error(result, "cannot change n_embd when resuming")


def test_resume_on_data_with_characters_the_model_lacks(trained: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text(pseudo_shakespeare(120) + "ЖЖЖ\n")
    result = invoke("train", "--resume", str(trained.parent), "--data", str(other),
                    "--device", "cpu")
    assert_one_line_error(result, "vocabulary lacks", "Ж")


# -- sampling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "needle"), [
    (["--temperature", "-0.5"], "temperature -0.5 is negative"),
    (["--temperature", "nan"], "temperature nan"),
    (["--top-p", "0"], "top-p 0.0 is outside (0, 1]"),
    (["--top-p", "1.5"], "top-p 1.5 is outside (0, 1]"),
    (["--top-k", "0"], "top-k 0 is below 1"),
    (["--beam-width", "0"], "beam width 0 is below 1"),
    (["--max-new-tokens", "-1"], "max-new-tokens must be 0 or more"),
    (["--no-repeat-ngram", "-3"], "no-repeat-ngram"),
    (["--context-policy", "bogus"], "context policy"),
    (["--seed", "-7"], "seed"),
    (["--threads", "0"], "--threads must be at least 1"),
])
def test_bad_sampling_options_fail_before_loading(options: list[str], needle: str,
                                                  tmp_path: Path) -> None:
    # The checkpoint does not exist: an error about the option shows it was checked first.
    assert_one_line_error(invoke(*sample_args(tmp_path / "none", *options)), needle)


def test_prompt_with_unknown_characters_is_sampled_with_a_warning(trained: Path) -> None:
    result = invoke(*sample_args(trained, "--prompt", "KING: ¿qué? 🙂", "--seed", "1"))
    assert result.exit_code == 0, result.stderr
    assert "dropped characters the model does not know" in result.stderr
    assert all(c in result.stderr for c in "¿é🙂")
    assert len(result.stdout) >= len("KING: ¿qué? 🙂") + 20


def test_empty_prompt_starts_from_a_newline(trained: Path) -> None:
    result = invoke(*sample_args(trained, "--prompt", "", "--seed", "1", "--json"))
    assert result.exit_code == 0, result.stderr
    assert '"completion"' in result.stdout  # and no warning: only which weights answered
    assert result.stderr.splitlines() == [f"note: answering from {trained} (step 6)"]


def test_prompt_longer_than_the_context_uses_its_end_with_a_warning(trained: Path) -> None:
    result = invoke(*sample_args(trained, "--prompt", "KING: good night sweet prince",
                                 "--beam-width", "2"))
    assert result.exit_code == 0, result.stderr
    assert "only its last 8 characters are used" in result.stderr
    assert result.stdout.startswith("KING: good night sweet prince")


# -- sizes the machine cannot hold, run folders that cannot be written ------------------------


def test_model_too_big_for_memory_is_one_line(corpus: Path, tmp_path: Path) -> None:
    # 2**50 wide: more bytes than any address space holds, so the allocation fails at once.
    result = invoke(*train_args(corpus, tmp_path / "r", "--n-embd", str(2**50), "--n-head", "1"))
    assert_one_line_error(result, "out of memory (RAM)", "--n-embd")


def test_run_folder_whose_metrics_log_cannot_be_written(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    (out / "metrics.jsonl").mkdir(parents=True)  # a folder where the log file should go
    assert_one_line_error(invoke(*train_args(corpus, out)), "cannot write", "metrics.jsonl")


def test_broken_pipe_while_sampling_exits_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    # `chargpt-tui sample | head -c 10`: the reader left, which is not an error worth a line.
    import typer

    import chargpt_tui.headless
    from chargpt_tui.cli import run_guarded

    silenced: list[bool] = []  # the real one would point pytest's own capture at /dev/null
    monkeypatch.setattr(chargpt_tui.headless, "silence_stdout", lambda: silenced.append(True))

    def write_to_a_closed_pipe() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    with pytest.raises(typer.Exit) as exit_info:
        run_guarded(write_to_a_closed_pipe)
    assert exit_info.value.exit_code == 141 and silenced == [True]


# -- mistyped options: the real entry point, not typer's multi-line box ------------------------


@pytest.mark.parametrize(("args", "needles"), [
    (["train", "--n-layer", "abc"], ("'--n-layer'", "chargpt-tui train --help")),
    (["sample", "--bogus"], ("No such option: --bogus", "chargpt-tui sample --help")),
    (["sample", "--top-k"], ("--top-k", "requires an argument")),
])
def test_usage_errors_are_one_line(args: list[str], needles: tuple[str, ...],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from chargpt_tui.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert all(needle in lines[0] for needle in needles), lines[0]


def test_version_works_without_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from chargpt_tui.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("chargpt-tui ")


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    from chargpt_tui.errors import CheckpointError

    result = CliRunner().invoke(app, ["--debug", "sample", "--checkpoint", str(tmp_path)])
    assert isinstance(result.exception, CheckpointError)


def test_checkpoint_with_a_field_of_the_wrong_type(trained: Path, tmp_path: Path) -> None:
    bad = tampered(trained, tmp_path / "ckpt.pt", train_config="fast please")
    assert_one_line_error(invoke("train", "--resume", str(bad), "--device", "cpu"), str(bad),
                          "'train_config' is a str")


def test_resume_on_different_data_says_so(trained: Path, tmp_path: Path) -> None:
    from chargpt_tui.run_setup import prepare_run

    other = write_text(tmp_path, "other.txt", seed=5)  # same characters, other text
    notices: list[str] = []
    setup = prepare_run(resume=trained.parent, data=str(other), notice=notices.append)
    assert setup.data_name == str(other)
    assert notices == [f"resuming on {other}, but this run started on "
                       f"{load_checkpoint(trained)['data']}"]


def test_beam_search_that_runs_out_of_unrepeated_characters_stops_with_a_note(
        trained: Path) -> None:
    # With --no-repeat-ngram 1 every character may appear once: a few dozen at most.
    vocab_size = len(load_checkpoint(trained)["vocab"])
    result = invoke(*sample_args(trained, "--beam-width", "2", "--no-repeat-ngram", "1",
                                 "--max-new-tokens", "500", "--prompt", ""))
    assert result.exit_code == 0 and result.exception is None, result.stderr
    assert "beam search stopped after" in result.stderr
    generated = result.stdout.rstrip("\n")
    assert 0 < len(generated) <= vocab_size
    assert len(set(generated)) == len(generated)  # and it never repeated itself
