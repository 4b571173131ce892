"""`anchorloop chat` driven as a person would: real CLI, piped input, kill -9, resume."""

import os
import re
import signal
import subprocess
import sys
import threading
import time


def _chat(db, *extra, stdin=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, "-m", "anchorloop", "chat", "--model", "tiny-random", "--max-turns", "2",
         "--max-new-tokens", "16", "--db", str(db),
         "--tool", "python", *extra],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
    )


def test_commands_and_a_question(tmp_path):
    proc = _chat(tmp_path / "s.sqlite")
    out, _ = proc.communicate("/tools\nWhat is 2+2?\n/history\n/bogus\n/exit\n", timeout=300)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"Session [0-9a-f]{8}", out)
    assert "python: Run Python" in out  # /tools
    assert "Question: What is 2+2?" in out  # /history shows the stored conversation
    assert "Unknown command /bogus" in out


def test_a_killed_session_resumes_with_its_history(tmp_path):
    db = tmp_path / "s.sqlite"
    proc = _chat(db)
    proc.stdin.write("What is 6*7?\n")
    proc.stdin.flush()
    # wait until the question has been answered or stopped, i.e. the prompt is shown again
    chunks: list[str] = []
    threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True).start()
    deadline = time.time() + 240
    while "".join(chunks).count("you>") < 2:
        assert time.time() < deadline, "".join(chunks)[-2000:]
        time.sleep(0.1)
    seen = "".join(chunks)
    session = re.search(r"Session ([0-9a-f]{8})", seen).group(1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    resumed = _chat(db, "--resume", session)
    out, _ = resumed.communicate("/history\n/exit\n", timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert f"Session {session}" in out
    assert "resumed:" in out
    assert "Question: What is 6*7?" in out
