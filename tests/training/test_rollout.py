import asyncio
import time

from agent.graph import build_agent
from envs.base import Env, Task
from tools import tool
from training.rollout import rollout, run_one
from training.trajectory import load_jsonl, save_jsonl


@tool
async def wait(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"waited {seconds}"


class EchoEnv(Env):
    name = "echo"

    def tools(self):
        return [wait]

    def tasks(self, split="test", n=None, seed=0):
        return [Task(id=f"t{i}", question=f"q{i}", reference=str(i)) for i in range(5)][:n]

    def score(self, task, answer):
        return float(answer.strip() == task.reference)


def test_a_slow_tool_call_does_not_hold_back_the_other_trajectories(scripted):
    def reply(prompt_ids):
        text = scripted.tokenizer.decode(prompt_ids)
        question = text.rsplit("<|im_start|>user\nq", 1)[-1][0] if "waited" not in text else None
        if "waited" in text or "<tool_response>" in text:
            return "Final answer: 0"
        delay = 1.5 if question == "0" else 0.0
        return f'<tool_call>{{"name": "wait", "arguments": {{"seconds": {delay}}}}}</tool_call>'

    env = EchoEnv()
    agent = build_agent(scripted(reply), env.tools(), protocol="json", exemplars=[], self_correct=False)
    finished = []
    started = time.perf_counter()
    trajectories = asyncio.run(rollout(agent, env, env.tasks(), on_done=lambda t: finished.append(t.task_id)))
    elapsed = time.perf_counter() - started
    assert finished[-1] == "t0" and set(finished[:-1]) == {"t1", "t2", "t3", "t4"}
    assert elapsed < 1.5 + 1.0  # the slow call overlapped with everything else
    assert [t.task_id for t in trajectories] == ["t0", "t1", "t2", "t3", "t4"]  # results in task order
    assert trajectories[0].attempts[0].score == 1.0 and trajectories[1].attempts[0].score == 0.0
    assert trajectories[0].timings.tools_s >= 1.5


def test_generations_and_jsonl_round_trip(scripted, tmp_path):
    env = EchoEnv()
    agent = build_agent(scripted(lambda ids: "Final answer: 1"), env.tools(), protocol="json", exemplars=[],
                        self_correct=False)
    trajectories = asyncio.run(rollout(agent, env, env.tasks(n=2), num_generations=3))
    assert [(t.task_id, t.group) for t in trajectories] == [
        ("t0", 0), ("t0", 1), ("t0", 2), ("t1", 0), ("t1", 1), ("t1", 2)]
    path = save_jsonl(trajectories, tmp_path / "t.jsonl")
    assert load_jsonl(path) == trajectories


def test_a_failing_run_is_recorded_not_raised(scripted):
    class Broken:
        tokenizer = scripted.tokenizer

        async def generate(self, prompt_ids, sampling, *, on_text=None):
            raise RuntimeError("device fell off")

    env = EchoEnv()
    agent = build_agent(Broken(), env.tools(), protocol="json", exemplars=[])
    trajectories = asyncio.run(rollout(agent, env, env.tasks(n=2)))
    assert all(t.stop_reason.startswith("error: RuntimeError: device fell off") for t in trajectories)
    assert all(t.attempts == [] for t in trajectories)


def test_turn_spans_cover_exactly_the_sampled_tokens_and_name_their_attempt(scripted):
    replies = iter(['<tool_call>{"name": "wait", "arguments": {"seconds": 0}}</tool_call>', "Final answer: 3",
                    "Final answer: 0"])
    env = EchoEnv()
    agent = build_agent(scripted(lambda ids: next(replies)), env.tools(), protocol="json", exemplars=[])
    (traj,) = asyncio.run(rollout(agent, env, env.tasks(n=1)))
    assert [s.attempt for s in traj.turn_spans] == [0, 0, 1]
    covered = traj.attempt_mask(0)
    covered = [a or b for a, b in zip(covered, traj.attempt_mask(1), strict=True)]
    assert covered == traj.env_mask  # every model token is in one span, no inserted token is
    assert sum(traj.attempt_mask(1)) == sum(traj.env_mask[traj.turn_spans[2].start:])


def test_a_task_listed_twice_gets_distinct_groups(scripted):
    env = EchoEnv()
    agent = build_agent(scripted(lambda ids: "Final answer: 1"), env.tools(), protocol="json", exemplars=[],
                        self_correct=False)
    t0, t1 = env.tasks(n=2)
    trajectories = asyncio.run(rollout(agent, env, [t0, t0, t1, t1]))  # as TRL hands over repeated prompts
    assert [(t.task_id, t.group) for t in trajectories] == [("t0", 0), ("t0", 1), ("t1", 0), ("t1", 1)]


def test_the_rollout_scores_through_the_envs_async_scorer(scripted):
    class AsyncOnly(EchoEnv):
        def score(self, task, answer):
            raise AssertionError("the rollout must call ascore")

        async def ascore(self, task, answer):
            return 0.75

    env = AsyncOnly()
    agent = build_agent(scripted(lambda ids: "Final answer: 1"), env.tools(), protocol="json", exemplars=[],
                        self_correct=False)
    (traj,) = asyncio.run(rollout(agent, env, env.tasks(n=1)))
    assert traj.attempts[0].score == 0.75


def test_a_given_first_attempt_starts_the_run_at_the_verify_step(scripted):
    seen = []

    def reply(ids):
        seen.append(scripted.tokenizer.decode(ids))
        return "Final answer: 2"

    env = EchoEnv()
    agent = build_agent(scripted(reply), env.tools(), protocol="json", exemplars=[])
    given = {"calls": [{"tool": "wait", "arguments": {"seconds": 0}}], "answer": "9"}
    traj = asyncio.run(run_one(agent, env, env.tasks(n=3)[2], first_attempt=given))
    assert len(seen) == 1 and "waited 0" in seen[0] and "Final answer: 9" in seen[0]  # real tool output, given
    assert [(a.answer, a.injected, a.score) for a in traj.attempts] == [("9", True, 0.0), ("2", False, 1.0)]
    assert traj.tool_calls == 0  # the given call is not the model's
    assert [s.attempt for s in traj.turn_spans] == [1] and sum(traj.attempt_mask(0)) == 0
    assert traj.env_mask == [1] * len(traj.completion_ids)  # the given attempt lies in the prompt, not sampled
    assert [m.get("injected", False) for m in traj.messages] == [False, True, True, True, False, False]


def test_a_question_and_replies_with_lone_surrogates_save_and_reload(scripted, tmp_path):
    class Broken(EchoEnv):
        def tasks(self, split="test", n=None, seed=0):
            return [Task(id="s", question="what is \ud83d?", reference="1")]

    env = Broken()
    agent = build_agent(scripted(lambda ids: "Final answer: 1\udca5"), env.tools(), protocol="json", exemplars=[],
                        self_correct=False)
    trajectories = asyncio.run(rollout(agent, env, env.tasks()))
    assert trajectories[0].question == "what is \ufffd?" and trajectories[0].attempts[0].answer == "1\ufffd"
    assert load_jsonl(save_jsonl(trajectories, tmp_path / "t.jsonl")) == trajectories


def test_a_run_that_cannot_be_scored_or_saved_is_a_failed_run_naming_the_cause(scripted):
    class Fussy(EchoEnv):
        def score(self, task, answer):
            if task.id == "t0":
                raise KeyError("no reference")
            return float("nan") if task.id == "t1" else 1.0

    env = Fussy()
    agent = build_agent(scripted(lambda ids: "Final answer: 1"), env.tools(), protocol="json", exemplars=[],
                        self_correct=False)
    unscored, unsaveable, fine = asyncio.run(rollout(agent, env, env.tasks(n=3)))
    assert unscored.stop_reason == "error: RuntimeError: scoring the answer '1' raised KeyError: 'no reference'"
    assert unsaveable.stop_reason.startswith("error: ValueError: the trajectory of task 't1' cannot be saved")
    assert (unscored.completion_ids, unsaveable.attempts) == ([], [])  # no loss and no reward from either
    assert fine.attempts[0].score == 1.0 and fine.stop_reason == "answered"


def test_save_jsonl_writes_an_unsaveable_row_as_a_failed_run_and_keeps_the_rest(tmp_path):
    from training.trajectory import Trajectory

    def row(task_id, **kw):
        fields = {"prompt_ids": [1], "completion_ids": [2], "env_mask": [1], "logprobs": [-0.5]} | kw
        return Trajectory(task_id=task_id, **fields)

    rows = [row("nan", logprobs=[float("nan")]), row("inf", messages=[{"role": "tool", "x": float("inf")}]),
            row("object", messages=[{"role": "tool", "content": object()}]), row("ok")]
    nan, inf, obj, ok = load_jsonl(save_jsonl(rows, tmp_path / "t.jsonl"))
    assert "cannot be saved" in nan.stop_reason and "Out of range float" in nan.stop_reason
    assert inf.stop_reason == "error: ValueError: the trajectory of task 'inf' does not read back as itself once saved"
    assert "cannot be saved" in obj.stop_reason and obj.completion_ids == []
    assert ok == rows[3]
