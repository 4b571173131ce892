import json
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from training.eval import BASELINE, Configuration, EvalReport, eval_rows
from training.report import find_evaluations, read_train_log, write_report
from training.trajectory import Attempt, Trajectory, save_jsonl

HOSTILE = "<script>alert('x')</script> & <b>bold</b>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def trajectory(i: int, first: float, last: float | None, env: str = "sums") -> Trajectory:
    attempts = [Attempt(answer=f"{i}", turn=0, score=first)]
    if last is not None:
        attempts.append(Attempt(answer=f"{i + 1}", turn=2, score=last))
    messages = [
        {"role": "user", "content": f"Question {i}: {HOSTILE}"},
        {"role": "assistant", "content": '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'},
        {"role": "tool", "name": "add", "arguments": {"a": 1}, "content": f"error {HOSTILE}", "error": True},
        {"role": "assistant", "content": f"Final answer: {i}"},
        {"role": "verify", "content": "Check this answer with a tool."},
        {"role": "assistant", "content": f"Final answer: {i + 1}"},
    ]
    return Trajectory(task_id=f"q{i}", env=env, question=f"Question {i}", prompt_ids=[1, 2], completion_ids=[3, 4],
                      env_mask=[1, 0], logprobs=[-0.5, 0.0], attempts=attempts, messages=messages, turns=3,
                      tool_calls=1, tool_errors=1, stop_reason="verified")


def write_eval(directory: Path, scores: list[tuple[float, float | None]], configs=(BASELINE,)) -> None:
    by_config = {c: [trajectory(i, a, b) for i, (a, b) in enumerate(scores)] for c in configs}
    EvalReport(model="tiny", split="test", n=len(scores), seed=0, generations=1, envs=["sums"],
               configs=[Configuration(name=c) for c in configs], rows=eval_rows(by_config, ["sums"]),
               trajectories=by_config).save(directory)


def write_train_log(path: Path, steps: int = 40) -> None:
    lines = []
    for s in range(steps):
        record = {"step": s, "reward_mean": 0.2 + s / 50 + (s % 3) * 0.05, "acc_t1": 0.3 + s / 200,
                  "acc_t2": 0.35 + s / 120, "tool_use_rate": min(1.0, 0.1 + s / 40), "tool_error_rate": 0.4 - s / 200,
                  "no_signal_fraction": 0.6 - s / 100, "delta_i_to_c": 0.05, "delta_c_to_i": 0.02,
                  "stage": 1 if s < 10 else 2}
        if s == 7:
            del record["acc_t2"]  # a step that did not log a key
        if s == 8:
            record["reward_mean"] = None
        lines.append(json.dumps(record))
    lines.insert(5, "not json at all")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("run")
    write_train_log(tmp_path / "train_log.jsonl")
    before = [(1, 1), (1, 0), (0, 0), (0, 0), (0, 1)]
    write_eval(tmp_path / "eval_before", before, configs=(BASELINE, "no-verify-tools"))
    write_eval(tmp_path / "eval_after", [(1, 1), (1, 1), (0, 1), (0, 1), (0, 0)])
    save_jsonl([trajectory(9, 0, 1)], tmp_path / "trajectories" / "step_00039.jsonl")
    return tmp_path


@pytest.fixture(scope="module")
def page(run_dir):
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    return path.read_text()


def assert_real_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert len({tuple(p) for p in pixels.reshape(-1, pixels.shape[-1])[::97]}) > 1, f"{path} is blank"


def test_full_run_dir_renders_every_section(run_dir, page):
    pngs = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert pngs == ["accuracy.png", "attempts.png", "changes.png", "reward.png", "signal.png", "tools.png",
                    "transitions.png"]
    for name in pngs:
        assert_real_png(run_dir / "plots" / name)
    assert page.count('src="data:image/png;base64,') == len(pngs)  # self-contained: every plot embedded
    assert "After − before" in page and "before · no-verify-tools" in page
    assert "training rollouts, step 00039" in page
    assert "<p class='note'>" not in page  # nothing is missing


def test_trajectory_text_is_escaped_and_roles_are_marked(page):
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<div class='msg tool error'>" in page and "<div class='msg verify'>" in page
    assert "<span class='call'>&lt;tool_call&gt;" in page  # the tool call inside the model's text
    assert "<details>" in page and "wrong → right" in page and "right → wrong" in page


def test_sample_puts_changed_answers_first_and_is_bounded(tmp_path):
    write_eval(tmp_path / "eval_after", [(1, 1), (0, 1), (1, 1), (1, 0), (0, 1), (0, 0)])
    page = write_report(tmp_path, sample=2).read_text()
    after = page.split("<h3>after")[1].split("<h3>")[0]
    assert after.count("<details>") == 2 and after.count("wrong → right") == 2
    assert "(2 of 6)" in after


def test_empty_run_dir_still_renders_and_says_what_is_missing(tmp_path):
    page = write_report(tmp_path).read_text()
    assert "No training log (train_log.jsonl)" in page
    assert "No evaluation found" in page and "No trajectories to show" in page
    assert not list(tmp_path.glob("plots/*.png"))


def test_partial_pieces(tmp_path):
    (tmp_path / "train_log.jsonl").write_text('{"step": 1, "reward_mean": 0.5}\n{"step": 2, "reward_mean": 0.7}\n')
    write_eval(tmp_path / "eval_before", [(1, 1), (0, 1)])
    page = write_report(tmp_path).read_text()
    assert "has no <code>acc_t1</code> / <code>acc_t2</code> values" in page
    assert "No eval_after/ yet" in page
    assert "tool_use_rate" in page  # the tool section says why it is empty
    assert {p.name for p in (tmp_path / "plots").glob("*.png")} == {"reward.png", "attempts.png", "transitions.png"}


def test_plain_trajectory_files_are_used_without_eval_dirs(tmp_path):
    save_jsonl([trajectory(0, 0, 1), trajectory(1, 1, 1), trajectory(2, 0, None)], tmp_path / "rollouts.jsonl")
    (tmp_path / "notes.jsonl").write_text('{"something": "else"}\n')  # not trajectories: skipped
    evaluations = find_evaluations(tmp_path)
    assert [e.label for e in evaluations] == ["rollouts"]
    assert evaluations[0].rows[0].transitions.matrix() == [[1, 0], [1, 1]]
    page = write_report(tmp_path).read_text()
    assert "rollouts" in page
    assert_real_png(tmp_path / "plots" / "transitions.png")


def test_an_eval_out_dir_is_a_run_dir_too(tmp_path):
    write_eval(tmp_path, [(1, 1), (0, 1)])
    evaluations = find_evaluations(tmp_path)
    assert [e.label for e in evaluations] == ["eval"] and len(evaluations[0].trajectories[BASELINE]) == 2
    assert "wrong → right" in write_report(tmp_path).read_text()


def test_broken_eval_json_is_reported_not_raised(tmp_path):
    write_eval(tmp_path / "eval_after", [(1, 1)])
    (tmp_path / "eval_after" / "eval.json").write_text("{oops")
    page = write_report(tmp_path).read_text()
    assert "could not be read" in page and "right → right" in page  # rows recomputed from the trajectories


def test_train_log_reader_tolerates_junk(tmp_path):
    assert read_train_log(tmp_path / "missing.jsonl") is None
    (tmp_path / "log.jsonl").write_text('{"step": 1}\n[1, 2]\n\nnope\n{"step": 2}\n')
    assert read_train_log(tmp_path / "log.jsonl") == [{"step": 1}, {"step": 2}]


def test_missing_run_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run directory"):
        write_report(tmp_path / "nope")


def test_cli_report_prints_the_path(run_dir):
    from anchorloop.cli import app

    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(run_dir / "report.html")
    missing = CliRunner().invoke(app, ["report", str(run_dir / "nope")])
    assert missing.exit_code == 2 and "No run directory" in missing.output


def test_cli_eval_help_and_bad_ablation():
    from anchorloop.cli import app

    result = CliRunner().invoke(app, ["eval", "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and "--ablate" in result.output and "verify-tools" in result.output
    bad = CliRunner().invoke(app, ["eval", "--ablate", "tools-off"])
    assert bad.exit_code == 2 and "Unknown ablation" in bad.output


def test_report_command_does_not_import_torch(tmp_path):
    write_eval(tmp_path, [(0, 1)])
    code = ("import sys; from typer.testing import CliRunner; from anchorloop.cli import app; "
            f"r = CliRunner().invoke(app, ['report', {str(tmp_path)!r}]); assert r.exit_code == 0, r.output; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_training_run_without_evaluation_gets_the_commands_that_evaluate_it(tmp_path):
    import html
    import re
    import shlex

    from typer.testing import CliRunner

    from anchorloop.cli import app
    from training.config import TrainConfig

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = TrainConfig.model_validate({
        "output_dir": str(run_dir), "model": {"name": "tiny-random"},
        "env": {"name": "arithmetic", "kwargs": {"level": 1}, "eval_tasks": 2},
        "agent": {"max_turns": 2, "max_new_tokens": 8}})
    (run_dir / "config.json").write_text(config.model_dump_json())
    page = write_report(run_dir).read_text(encoding="utf-8")
    commands = html.unescape(re.search(r"<pre>(.*?)</pre>", page, re.DOTALL).group(1)).splitlines()
    assert commands[1].endswith(f"--model {run_dir}/final --out {run_dir}/eval_after")
    assert commands[2] == f"anchorloop report {run_dir}"
    before = shlex.split(commands[0])
    assert before[:4] == ["anchorloop", "eval", "--env", "arithmetic"] and "level=1" in before
    result = CliRunner().invoke(app, before[1:])  # the command runs as written
    assert result.exit_code == 0, result.output[-2000:]
    assert "before" in write_report(run_dir).read_text(encoding="utf-8")
    assert (run_dir / "eval_before" / "eval.json").is_file()


def test_plot_steps_are_whole_numbers():
    from training.plots import line_figure

    fig = line_figure("t", [0.0, 1.0, 2.0], {"a": [0.1, 0.5, 0.2]})
    ticks = [t for t in fig.axes[0].get_xticks() if 0 <= t <= 2]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_a_run_without_an_answer_is_shown_as_no_answer_not_wrong():
    from training.report_html import outcome

    silent = trajectory(0, 0.0, None).model_copy(update={"attempts": [], "stop_reason": "max_turns"})
    assert outcome(silent) == ("no answer", "na")
    assert outcome(trajectory(1, 0.0, None)) == ("wrong → wrong", "ww")


def _change_cells(page: str) -> dict[str, str]:
    import re

    from training.eval import REPORT_COLUMNS

    table = page.split("After − before")[1].split("</table>")[0]
    cells = re.findall(r"<td( class='(\w+)')?>", table)[2:]  # after env and config
    return {header: cls for (header, _), (_, cls) in zip(REPORT_COLUMNS, cells, strict=True)}


def test_after_minus_before_colours_say_better_or_worse_for_every_column(tmp_path):
    from training.eval import REPORT_COLUMNS
    from training.report import BETTER

    assert set(BETTER) == {key for _, key in REPORT_COLUMNS}  # a new column must say which way is better
    kept, broken = [(1.0, 1.0)] * 4, [(1.0, 0.0)] * 4
    for name, before, after, colour in (("worse", kept, broken, "bad"), ("better", broken, kept, "good")):
        run = tmp_path / name
        write_eval(run / "eval_before", before)
        write_eval(run / "eval_after", after)
        cells = _change_cells(write_report(run).read_text(encoding="utf-8"))
        assert cells["Δc→i"] == colour and cells["Acc@t2"] == colour and cells["Δ"] == colour
        assert cells["confirm."] == "" and cells["tool use"] == ""  # unchanged (and never coloured)
        assert cells["Acc@t1"] == ""  # unchanged


def test_the_probe_table_colours_fix_rate_false_alarms_and_vacuous_checks_against_before(tmp_path):
    import re

    from training.metrics import wilson
    from training.probe import ProbeResult

    def probe(fixed, alarms, vacuous):
        return ProbeResult(env="sums", fix_rate=wilson(fixed, 10), false_alarm_rate=wilson(alarms, 10),
                           vacuous_check_rate=wilson(vacuous, 10), injected=10, skipped=0)

    for name, (before, after), colour in (("better", ((1, 6, 9), (5, 0, 2)), "good"),
                                          ("worse", ((5, 0, 2), (1, 6, 9)), "bad")):
        run = tmp_path / name
        for label, counts in (("before", before), ("after", after)):
            write_eval(run / f"eval_{label}", [(1.0, 1.0)] * 2)
            path = run / f"eval_{label}" / "eval.json"
            report = EvalReport.load(path.parent)
            report.model_copy(update={"probes": [probe(*counts)]}).save(path.parent)
        page = write_report(run).read_text(encoding="utf-8")
        table = page.split("Injected-error probe")[1].split("</table>")[0]
        rows = table.split("<tr>")[2:]  # the header row first
        assert [re.findall(r"<td(?: class='(\w+)')?>", r)[5:] for r in rows] == [["", "", ""], [colour] * 3]
        assert "50.0" in rows[1] if colour == "good" else "10.0" in rows[1]
