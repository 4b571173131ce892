"""One real GRPO step through TRL with our rollout_func, on the tiny random model."""

import pytest
import torch
from trl import GRPOConfig

from agent.hf_policy import HFPolicy
from agent.models import load_model
from agent.policy import SamplingParams
from envs import get_env
from training.grpo import AgentRollout, SelfCorrectionGRPOTrainer, group_advantages, injected_advantages
from training.rollout import build_env_agent
from training.shared_prefix import common_prefix_length, shared_prefix_logps
from training.trajectory import Attempt, Trajectory, TurnSpan


def varying_reward(completions, **_):
    """Rewards that differ within every group, so advantages (and the loss) are non-zero."""
    return [float(len(str(c)) % 7) for c in completions]


class Recorder:
    def __init__(self, inner):
        self.inner = inner
        self.outputs = []

    def __call__(self, prompts, trainer):
        out = self.inner(prompts, trainer)
        self.outputs.append(out)
        return out

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def step_setup(tmp_path):
    model, tokenizer = load_model("tiny-random", device="cpu")
    env = get_env("arithmetic", level=1)
    tasks = env.tasks("train", n=2)
    policy = HFPolicy(model, tokenizer)
    agent = build_env_agent(policy, env, max_turns=2, exemplars=[],
                            sampling=SamplingParams(max_new_tokens=12, temperature=1.0))
    rollout = Recorder(AgentRollout(lambda model: (policy, agent), env, tasks))

    def make(stage1_steps=0, beta=0.0, share_prefix=True, credit="per_attempt", reward=varying_reward,
             first_attempt_beta=None, loss_type="dapo", injected_baseline="group"):
        args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                          loss_type=loss_type, max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False, report_to=[],
                          activation_checkpointing=False, temperature=1.0, logging_steps=1, save_strategy="no",
                          beta=beta, disable_tqdm=True)
        return SelfCorrectionGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[reward],
                                         args=args, train_dataset=env.as_dataset("train", n=2),
                                         agent_rollout=rollout, stage1_steps=stage1_steps,
                                         share_prefix=share_prefix, credit=credit,
                                         first_attempt_beta=first_attempt_beta,
                                         injected_baseline=injected_baseline)

    yield model, rollout, make
    policy.close()


def test_one_step_trains_on_exactly_the_sampled_ids_and_masks_inserted_tokens(step_setup):
    model, rollout, make = step_setup
    trainer = make()
    captured = []
    original = trainer._compute_loss
    trainer._compute_loss = lambda m, inputs: captured.append(inputs) or original(m, inputs)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()

    loss = trainer.state.log_history[0]["loss"]
    assert torch.isfinite(torch.tensor(float(loss)))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, "no parameter moved after one optimizer step"

    produced = rollout.outputs[0]
    inputs = captured[0]
    trained = []
    for ids, mask, tool_mask in zip(inputs["completion_ids"], inputs["completion_mask"], inputs["tool_mask"]):
        n = int(mask.sum())
        trained.append((ids[:n].tolist(), tool_mask[:n].tolist()))
    expected = [(c, m) for c, m in zip(produced["completion_ids"], produced["env_mask"])]
    assert sorted(trained) == sorted(expected)
    assert any(0 in m for _, m in expected), "the rollout inserted no environment tokens"


def test_inserted_tokens_get_no_gradient(step_setup):
    """The gradient reaching the final hidden state at a position is that position's loss term alone
    (nothing after the last layer mixes positions), so it is zero exactly where the loss ignores a token."""
    model, rollout, make = step_setup
    trainer = make(share_prefix=False)  # the hidden-state layout below is TRL's; the shared path is tested against it
    inputs = trainer._generate_and_score_completions(_batch(trainer))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which we bypass here
    final_hidden = {}

    def keep(module, args, output):
        output.retain_grad()
        final_hidden["h"] = output

    handle = model.model.norm.register_forward_hook(keep)
    model.train()
    trainer.compute_loss(model, inputs).backward()
    handle.remove()
    prompt_width = inputs["prompt_ids"].shape[1]
    completion_width = inputs["completion_ids"].shape[1]
    # hidden state at prompt_width - 1 + j predicts completion token j
    grad = final_hidden["h"].grad[:, prompt_width - 1 : prompt_width - 1 + completion_width].abs().sum(-1)
    real = inputs["completion_mask"].bool()
    inserted = real & (inputs["tool_mask"] == 0)
    sampled = real & (inputs["tool_mask"] == 1)
    assert inserted.any() and sampled.any()
    assert torch.all(grad[inserted] == 0)
    assert grad[sampled].sum() > 0


def test_shared_prefix_loss_equals_trls_loss_and_gradients(step_setup, monkeypatch):
    """Encoding the rows' common prefix once is the same function of the weights as TRL's full rows."""
    import training.grpo as grpo

    model, rollout, make = step_setup
    trainer = make(beta=0.1)
    calls = []
    monkeypatch.setattr(grpo, "shared_prefix_logps",
                        lambda *a, **k: calls.append(a[1].shape) or shared_prefix_logps(*a, **k))
    inputs = trainer._generate_and_score_completions(_batch(trainer))  # reference log-probs (beta > 0)
    assert calls, "the reference log-probs did not take the shared-prefix path"
    trainer.current_gradient_accumulation_steps = 1
    model.train()
    results = {}
    for share in (False, True):
        trainer.share_prefix = share
        calls.clear()
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs)
        loss.backward()
        results[share] = (loss.item(), [p.grad.clone() for p in model.parameters()])
        assert bool(calls) == share
    assert results[True][0] == pytest.approx(results[False][0], rel=1e-5, abs=1e-6)
    assert any(g.abs().sum() > 0 for g in results[False][1])
    for shared, full in zip(results[True][1], results[False][1], strict=True):
        torch.testing.assert_close(shared, full, rtol=1e-4, atol=1e-6)


def test_shared_prefix_log_probs_match_full_rows_with_padding():
    from trl.trainer.utils import add_fused_lm_head

    torch.manual_seed(0)
    model, _ = load_model("tiny-random", device="cpu")
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    vocab = model.config.vocab_size
    prefix = torch.randint(5, vocab, (40,))
    prompts = [torch.cat([prefix, torch.randint(5, vocab, (n,))]) for n in (3, 7, 5, 4)]
    completions = [torch.randint(5, vocab, (n,)) for n in (6, 9, 4, 0)]  # the last row is fully masked
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    ids = torch.zeros(4, width_p + width_c, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[b, width_p - len(p) : width_p], mask[b, width_p - len(p) : width_p] = p, 1
        ids[b, width_p : width_p + len(c)], mask[b, width_p : width_p + len(c)] = c, 1
    logps, entropy = shared_prefix_logps(model, ids, mask, width_c, compute_entropy=True)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if not len(c):
            assert torch.all(logps[b] == 0)
            continue
        full = torch.cat([p, c])[None]
        labels = full.clone()
        labels[:, : len(p)] = -100
        out = model(input_ids=full, labels=labels, fused_lm_head=True)
        torch.testing.assert_close(logps[b, : len(c)], out.log_probs[0, len(p) - 1 :], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(entropy[b, : len(c)], out.entropy[0, len(p) - 1 :], rtol=1e-5, atol=1e-5)


def test_common_prefix_length():
    rows = [torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, 5]), torch.tensor([1, 2, 3])]
    assert common_prefix_length(rows) == 2
    assert common_prefix_length([torch.tensor([1, 2]), torch.tensor([1, 2, 3])]) == 2
    assert common_prefix_length([torch.tensor([7]), torch.tensor([1])]) == 0


def _batch(trainer):
    dataset = trainer.train_dataset
    rows = [dataset[i] for i in range(len(dataset))]
    return [dict(row) for row in rows for _ in range(2)]  # distinct rows, as TRL's sampler yields them


@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "bnpo", "dr_grpo"])
def test_first_attempt_beta_weighs_the_kl_on_first_attempt_tokens_alone(step_setup, loss_type):
    """With every token marked first-attempt, the loss is TRL's own with beta = first_attempt_beta (so the
    added term is normalized as TRL normalizes); with none marked, TRL's with beta."""
    model, rollout, make = step_setup
    trainer = make(beta=0.1, first_attempt_beta=0.7, loss_type=loss_type)
    inputs = trainer._generate_and_score_completions(_batch(trainer))
    first = inputs["first_attempt_tokens"]
    masks = rollout.outputs[-1]["first_attempt_mask"]
    assert first.shape == inputs["completion_ids"].shape and first.sum() == sum(map(sum, masks)) > 0
    torch.manual_seed(0)  # a reference model that differs from the policy, so the KL and its gradient are not 0
    inputs["ref_per_token_logps"] = inputs["ref_per_token_logps"] + 0.5 * torch.randn_like(first)
    trainer.current_gradient_accumulation_steps = 2
    model.train()

    def loss_and_grads(first_tokens, beta, first_attempt_beta):
        trainer.beta, trainer.first_attempt_beta = beta, first_attempt_beta
        model.zero_grad()
        loss = trainer.compute_loss(model, inputs | {"first_attempt_tokens": first_tokens})
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    for marked, expected_beta in ((torch.ones_like(first), 0.7), (torch.zeros_like(first), 0.1)):
        ours = loss_and_grads(marked, 0.1, 0.7)
        trls = loss_and_grads(marked, expected_beta, None)
        assert ours[0] == pytest.approx(trls[0], rel=1e-5, abs=1e-7)
        for a, b in zip(ours[1], trls[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert loss_and_grads(first, 0.1, 0.7)[0] != pytest.approx(loss_and_grads(first, 0.1, None)[0])


def test_first_attempt_beta_needs_a_reference_model(step_setup):
    _, _, make = step_setup
    with pytest.raises(ValueError, match="beta > 0"):
        make(beta=0.0, first_attempt_beta=0.5)


def test_stage_one_zeroes_advantages_on_the_first_attempt(step_setup):
    _, rollout, make = step_setup
    trainer = make(stage1_steps=1, beta=0.1)
    batch = _batch(trainer)
    inputs = trainer._generate_and_score_completions(batch)
    advantages = inputs["advantages"]
    assert advantages.dim() == 2
    masks = rollout.outputs[-1]["first_attempt_mask"]
    assert len(masks) == len(batch) and any(any(m) for m in masks)
    for row, mask in enumerate(masks):
        first = torch.tensor(mask, dtype=torch.bool)
        assert torch.all(advantages[row, : len(mask)][first] == 0)
    assert [row["stage"] for row in batch] == [1] * len(batch)  # reward terms see the stage


def test_trajectory_credit_gives_every_token_one_advantage(step_setup):
    _, rollout, make = step_setup
    trainer = make(stage1_steps=0, credit="trajectory")
    batch = _batch(trainer)
    inputs = trainer._generate_and_score_completions(batch)
    assert inputs["advantages"].dim() == 1 and [row["stage"] for row in batch] == [2] * len(batch)


def test_per_attempt_credit_pays_the_first_attempt_for_its_own_correctness(step_setup):
    """Stage II, per-attempt credit: the tokens up to the first answer carry the group-normalized
    advantage of the reward scored as if the first answer were the last, the rest the whole reward's."""
    _, rollout, make = step_setup
    trainer = make(stage1_steps=0, reward=lambda completions, last_score, **_: [float(s) for s in last_score])
    inner = rollout.inner

    def with_scores(prompts, trainer):  # group 1: right→wrong, wrong→right; group 2: wrong→right twice
        out = inner(prompts, trainer)
        out["first_score"], out["last_score"] = [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]
        return out

    rollout.inner = with_scores
    batch = _batch(trainer)
    inputs = trainer._generate_and_score_completions(batch)
    advantages = inputs["advantages"]
    assert advantages.dim() == 2
    masks = rollout.outputs[-1]["first_attempt_mask"]
    expected_first = [0.7071, -0.7071, 0.0, 0.0]  # (1 − 0.5) / std([1, 0]) and its mirror; a flat group: 0
    expected_rest = [-0.7071, 0.7071, 0.0, 0.0]  # the last answers' rewards, [0, 1] and [1, 1]
    checked = 0
    for row, mask in enumerate(masks):
        width = min(len(mask), advantages.shape[1])
        first = torch.tensor(mask[:width], dtype=torch.bool)
        valid = inputs["completion_mask"][row, :width].bool()
        on_first, on_rest = advantages[row, :width][first & valid], advantages[row, :width][~first & valid]
        if len(on_first):
            torch.testing.assert_close(on_first, torch.full_like(on_first, expected_first[row]), atol=1e-3, rtol=0)
            checked += 1
        if len(on_rest):
            torch.testing.assert_close(on_rest, torch.full_like(on_rest, expected_rest[row]), atol=1e-3, rtol=0)
    assert checked, "no row had first-attempt tokens"


def test_group_advantages_arithmetic():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    # group 1: mean 0.75, standard deviation 0.5; group 2 is flat: no signal
    expected = torch.tensor([0.5, -1.5, 0.5, 0.5, 0, 0, 0, 0])
    torch.testing.assert_close(group_advantages(rewards, 4), expected, atol=1e-3, rtol=0)
    centered = torch.tensor([0.25, -0.75, 0.25, 0.25, 0, 0, 0, 0])
    torch.testing.assert_close(group_advantages(rewards, 4, "none"), centered)


def test_injected_advantages_arithmetic():
    rewards = torch.tensor([2.0, 2.0, 0.0, 0.0, 1.0, 0.0])
    injected = torch.tensor([True, True, False, False, True, True])
    # injected rewards [2, 2, 1, 0]: leave-one-out means [1, 1, 4/3, 5/3], standard deviation 0.9574
    centred = torch.tensor([1.0, 1.0, 0.0, 0.0, -1 / 3, -5 / 3])
    torch.testing.assert_close(injected_advantages(rewards, injected, "none"), centred)
    torch.testing.assert_close(injected_advantages(rewards, injected), centred / 0.9574, atol=1e-3, rtol=0)
    one = torch.tensor([False, False, True, False, False, False])
    assert torch.equal(injected_advantages(rewards, one), torch.zeros(6))  # nothing to compare against


@pytest.mark.parametrize("baseline", ["group", "batch"])
def test_injected_batch_baseline_lets_all_or_nothing_groups_teach(step_setup, baseline):
    """Two injected groups, one fixed by both runs and one by neither: GRPO's group baseline gives them
    no advantage; the batch baseline ranks the fixed group's check above the missed one's."""
    _, rollout, make = step_setup
    trainer = make(credit="trajectory", reward=lambda completions, last_score, **_: [float(s) for s in last_score],
                   injected_baseline=baseline)
    inner = rollout.inner

    def injected(prompts, trainer):
        out = inner(prompts, trainer)
        out["injected"], out["last_score"] = [1, 1, 1, 1], [1.0, 1.0, 0.0, 0.0]
        return out

    rollout.inner = injected
    advantages = trainer._generate_and_score_completions(_batch(trainer))["advantages"]
    if baseline == "group":
        assert torch.equal(advantages, torch.zeros(4))
    else:  # rewards [1, 1, 0, 0]: leave-one-out means [1/3, 1/3, 2/3, 2/3], standard deviation 0.5774
        torch.testing.assert_close(advantages, torch.tensor([1.1547, 1.1547, -1.1547, -1.1547]), atol=1e-3, rtol=0)


def test_injected_baseline_is_checked(step_setup):
    _, _, make = step_setup
    with pytest.raises(ValueError, match="injected_baseline"):
        make(injected_baseline="task")


def test_per_attempt_credit_ranks_a_right_first_attempt_above_a_wrong_one():
    """The four transitions in one group, SCoRe's reward with α = 1: with one trajectory advantage a wrong
    first attempt that gets fixed scores highest (the incentive to start wrong); with per-attempt credit
    the first attempt's own advantage is positive exactly when it was right."""
    first = torch.tensor([1.0, 1.0, 0.0, 0.0])  # right→right, right→wrong, wrong→right, wrong→wrong
    last = torch.tensor([1.0, 0.0, 1.0, 0.0])
    whole = last + (last - first)
    trajectory = group_advantages(whole, 4)
    assert trajectory.argmax() == 2 and trajectory[1] < trajectory[3]
    own = group_advantages(first, 4)
    assert torch.all(own[:2] > 0) and torch.all(own[2:] < 0)


def test_first_attempt_mask_covers_turns_up_to_the_first_answer():
    traj = Trajectory(task_id="t", prompt_ids=[1], completion_ids=list(range(9)),
                      env_mask=[1, 1, 0, 1, 1, 0, 0, 1, 1], logprobs=[0.0] * 9,
                      attempts=[Attempt(answer="a", turn=1), Attempt(answer="b", turn=2)],
                      turn_spans=[TurnSpan(start=0, end=2, attempt=0), TurnSpan(start=3, end=5, attempt=0),
                                  TurnSpan(start=7, end=9, attempt=1)])
    assert traj.attempt_mask(0) == [1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert traj.attempt_mask(1) == [0, 0, 0, 0, 0, 0, 0, 1, 1]
    unanswered = traj.model_copy(update={"attempts": [], "turn_spans": [
        TurnSpan(start=0, end=2, attempt=0), TurnSpan(start=3, end=5, attempt=0), TurnSpan(start=7, end=9, attempt=0)]})
    assert unanswered.attempt_mask(0) == [1, 1, 0, 1, 1, 0, 0, 1, 1]


def test_injected_error_groups_train_on_the_verify_turn_alone(tmp_path, scripted):
    """With injected_errors, a group starts from a wrong attempt made from the model's own code: the
    given attempt lies in the prompt (no loss on it), and only the verify turn is trained."""
    from tests.training.test_probe import checker
    from training.injection import ErrorInjector

    model, tokenizer = load_model("tiny-random", device="cpu")
    env = get_env("arithmetic", level=1)
    tasks = env.tasks("train", n=2)
    policy = scripted(checker(scripted.tokenizer, rerun_own_code=False))
    agent = build_env_agent(policy, env, max_turns=4, exemplars=[])
    first_agent = build_env_agent(policy, env, max_turns=4, exemplars=[], self_correct=False)
    rollout = Recorder(AgentRollout(lambda m: (policy, agent), env, tasks,
                                    injector=lambda p: ErrorInjector(first_agent, env, share=1.0)))
    args = GRPOConfig(output_dir=str(tmp_path / "ckpt"), per_device_train_batch_size=4, num_generations=2,
                      max_steps=1, learning_rate=1e-2, use_cpu=True, bf16=False, report_to=[],
                      activation_checkpointing=False, temperature=1.0, logging_steps=1, save_strategy="no",
                      disable_tqdm=True)
    trainer = SelfCorrectionGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=[varying_reward],
                                        args=args, train_dataset=env.as_dataset("train", n=2), agent_rollout=rollout)
    trainer.train()
    out = rollout.outputs[0]
    assert out["first_score"] == [0.0] * 4 and out["last_score"] == [1.0] * 4  # all injected, all fixed
    assert all(sum(m) == 0 for m in out["first_attempt_mask"])
    decoded = [tokenizer.decode(p) for p in out["prompt_ids"]]
    assert all("Final answer:" in d and d.rstrip().endswith("assistant") for d in decoded)
    assert torch.isfinite(torch.tensor(float(trainer.state.log_history[0]["loss"])))


@pytest.mark.parametrize("redraws", [0, 1])
def test_an_injected_group_that_missed_every_run_is_redrawn(scripted, redraws):
    """Dynamic sampling for injected groups: the first draw's checks re-run the given wrong code (all
    missed); a redraw starts from a new wrong attempt, its checks fix it, and it replaces the group. The
    runs set aside are kept, not trained on."""
    import asyncio

    from agent.prompts import VERIFY_WITH_TOOLS
    from tests.training.test_probe import checker
    from training.injection import ErrorInjector

    env = get_env("arithmetic", level=1)
    task = env.tasks("train", n=1)[0]
    fixing = checker(scripted.tokenizer, rerun_own_code=False)
    copying = checker(scripted.tokenizer, rerun_own_code=True)
    verify_calls = []

    def reply(prompt_ids):
        verifying = VERIFY_WITH_TOOLS[:20] in scripted.tokenizer.decode(prompt_ids).rsplit("<|im_start|>user\n", 1)[-1]
        if verifying:
            verify_calls.append(1)
        return (copying if verifying and len(verify_calls) <= 2 else fixing)(prompt_ids)

    policy = scripted(reply)
    agent = build_env_agent(policy, env, max_turns=4, exemplars=[])
    first_agent = build_env_agent(policy, env, max_turns=4, exemplars=[], self_correct=False)
    rollout = AgentRollout(lambda m: (policy, agent), env, [task], injected_redraws=redraws)
    rollout.policy, rollout.agent = policy, agent
    rollout.injector = ErrorInjector(first_agent, env, share=1.0)
    runs = asyncio.run(rollout._collect([task, task]))
    assert len(runs) == 2 and all(t.starts_injected for t in runs)
    if redraws:
        assert all(t.last_right for t in runs) and [t.group for t in runs] == [0, 1]
        assert len(rollout.redrawn) == 2 and not any(t.last_right for t in rollout.redrawn)
    else:
        assert not any(t.last_right for t in runs) and rollout.redrawn == []
