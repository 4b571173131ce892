import asyncio
import time

from agent.graph import build_agent
from envs.base import Env, Task
from tools import tool
from training.rollout import rollout
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
