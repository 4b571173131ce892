import pytest

from training.config import ConfigError, RewardConfig, load_config
from training.rewards import no_signal_fraction, reward_functions, total_rewards


def test_quickstart_config_loads():
    cfg = load_config("configs/quickstart.toml")
    assert cfg.model.name == "smollm2-135m" and cfg.training.steps >= 1


@pytest.mark.parametrize("name", ["quickstart", "learning", "long-expressions", "own-errors"])
def test_every_shipped_config_loads_and_builds_its_env(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.toml")
    env = cfg.env.build()
    assert env.tasks("test", n=2) and cfg.training.micro_batch >= 1


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\nstepz = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'training.stepz'"):
        load_config(path)


def test_bad_values_and_files_are_clear(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\nsteps = 0\n")
    with pytest.raises(ConfigError, match="training.steps"):
        load_config(path)
    path.write_text("[training\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    for needs_a_reference_model in ("stage1_steps = 2", "first_attempt_beta = 0.5"):
        path.write_text(f"[training]\n{needs_a_reference_model}\n")
        with pytest.raises(ConfigError, match="beta > 0"):
            load_config(path)
    path.write_text("[training]\ntasks_per_step = 3\nnum_generations = 2\nmicro_batch_size = 4\n")
    with pytest.raises(ConfigError, match="micro_batch_size"):
        load_config(path)


def test_micro_batch_defaults_to_a_divisor_of_the_step_batch(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    for tasks, generations, micro in [(2, 4, 4), (3, 2, 3), (1, 2, 2), (5, 5, 1)]:
        cfg = load_config(path, {"training.tasks_per_step": tasks, "training.num_generations": generations})
        assert cfg.training.micro_batch == micro
    assert load_config(path, {"training.micro_batch_size": 2}).training.micro_batch == 2


def test_overrides_apply_dotted_keys(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("")
    cfg = load_config(path, {"training.steps": 7, "model.name": "tiny-random"})
    assert cfg.training.steps == 7 and cfg.model.name == "tiny-random"


def test_score_progress_bonus_rewards_fixing_and_punishes_breaking():
    weights = RewardConfig(correctness=1.0, progress=2.0, format=0.0, tool=0.0)
    fields = {"first_score": [0, 1, 1, 0], "last_score": [1, 1, 0, 0], "parse_errors": [0] * 4, "turns": [2] * 4,
              "tool_calls": [1] * 4, "tool_errors": [0] * 4}
    # wrong→right: 1 + 2; right→right: 1; right→wrong: 0 - 2; wrong→wrong: 0
    assert total_rewards(weights, fields) == [3.0, 1.0, -2.0, 0.0]


def test_stage_one_rewards_the_last_attempt_alone():
    weights = RewardConfig(correctness=1.0, progress=2.0, format=0.0, tool=0.0)
    fields = {"first_score": [0, 1, 1, 0], "last_score": [1, 1, 0, 0], "parse_errors": [0] * 4, "turns": [2] * 4,
              "tool_calls": [1] * 4, "tool_errors": [0] * 4, "stage": [1] * 4}
    assert total_rewards(weights, fields) == [1.0, 1.0, 0.0, 0.0]
    fields["stage"] = [2] * 4
    assert total_rewards(weights, fields) == [3.0, 1.0, -2.0, 0.0]


def test_format_and_tool_terms():
    weights = RewardConfig(correctness=0.0, progress=0.0, format=1.0, tool=1.0)
    fields = {"first_score": [0, 0], "last_score": [0, 0], "parse_errors": [1, 0], "turns": [4, 2],
              "tool_calls": [2, 0], "tool_errors": [1, 0]}
    assert total_rewards(weights, fields) == [-0.25 + 0.5, 0.0]
    with pytest.raises(ValueError, match="weight"):
        reward_functions(RewardConfig(correctness=0, progress=0, format=0, tool=0))


def test_check_term_costs_a_vacuous_verify_step_and_the_first_attempt_view_has_none():
    from training.grpo import first_attempt_view

    weights = RewardConfig(correctness=1.0, progress=1.0, format=0.0, tool=0.0, check=0.5)
    fields = {"first_score": [1, 1, 0, 0, 0], "last_score": [1, 1, 1, 0, 0], "parse_errors": [0] * 5,
              "turns": [2] * 5, "tool_calls": [1] * 5, "tool_errors": [0] * 5, "vacuous_check": [1, 0, 0, 1, 0]}
    # right→right by re-running its own code: 1 − 0.5; right→right by a new computation: 1; wrong→right: 2;
    # wrong→wrong costs nothing more for a vacuous check than for a made-up computation
    assert total_rewards(weights, fields) == [0.5, 1.0, 2.0, 0.0, 0.0]
    rows = [{k: v[i] for k, v in fields.items()} for i in range(5)]
    first = [row | first_attempt_view(row) for row in rows]
    as_fields = {k: [row[k] for row in first] for k in fields}
    # scored as if each run had stopped at its first answer: its correctness, no bonus, no check to judge
    assert total_rewards(weights, as_fields) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_no_signal_fraction_counts_flat_groups():
    assert no_signal_fraction([[1, 1], [0, 1], [0.5, 0.5]]) == pytest.approx(2 / 3)
    assert no_signal_fraction([]) == 0.0


def test_label_free_terms_read_their_rows_and_the_first_attempt_view_reads_the_first_answers():
    from training.grpo import first_attempt_view

    weights = RewardConfig(correctness=0.0, progress=0.0, majority=1.0, tool_check=0.5)
    fields = {"first_score": [0, 0], "last_score": [0, 0], "majority": [1.0, 0.0], "majority_first": [0.0, 0.0],
              "tool_check": [1.0, 1.0], "tool_check_first": [0.0, 1.0]}
    assert total_rewards(weights, fields) == [1.5, 0.5]  # no answer key read: both runs are wrong
    rows = [{k: v[i] for k, v in fields.items()} for i in range(2)]
    first = [row | first_attempt_view(row) for row in rows]
    assert total_rewards(weights, {k: [row[k] for row in first] for k in fields}) == [0.0, 0.5]
    assert weights.signals() == ["majority", "tool_check"]
    with pytest.raises(KeyError, match="did not compute"):
        total_rewards(RewardConfig(belief=1.0), {"first_score": [0], "last_score": [0]})


def test_an_unknown_reward_key_names_the_known_signals(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[rewards]\nself_agreement = 1.0\n")
    with pytest.raises(ConfigError, match=r"unknown key 'rewards.self_agreement' \(known: .*majority, self_judge, "
                                          r"tool_check, belief\)"):
        load_config(path)
    path.write_text("[rewards]\nbelief = 1.0\n[training]\nengine = 'vllm'\nvllm_server = 'http://localhost:8000'\n")
    with pytest.raises(ConfigError, match="belief"):
        load_config(path)


def test_belief_turns_compute_the_belief_signal_without_a_belief_reward(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[rewards]\nmajority = 1.0\n[training]\nbelief_turns = 0.5\n")
    assert load_config(path).signals() == ["majority", "belief"]
    path.write_text("[rewards]\nbelief = 1.0\n[training]\nbelief_turns = 0.5\n")
    assert load_config(path).signals() == ["belief"]
    path.write_text("[training]\nbelief_turns = 0.5\nengine = 'vllm'\n")
    with pytest.raises(ConfigError, match="belief_turns"):
        load_config(path)


def test_one_key_picks_the_rollout_engine_and_vllm_options_need_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[training]\nsteps = 1\n")
    assert load_config(path).training.engine == "hf"  # the default: in this process, on the trained weights
    path.write_text("[training]\nengine = 'vllm'\nvllm_kwargs = { dtype = 'float32', enforce_eager = true }\n")
    assert load_config(path).training.vllm_kwargs == {"dtype": "float32", "enforce_eager": True}
    for body, message in [
        ("[training]\nvllm_server = 'http://localhost:8000'\n", "set training.engine"),
        ("[training]\nvllm_kwargs = { dtype = 'float32' }\n", "in-process vLLM engine"),
        ("[training]\nengine = 'vllm'\nvllm_server = 'http://localhost:8000'\nvllm_kwargs = { dtype = 'float32' }\n",
         "own command line"),
        ("[model]\nlora = true\n[training]\nengine = 'vllm'\n", "LoRA"),
        ("[training]\nengine = 'sglang'\n", "engine"),
    ]:
        path.write_text(body)
        with pytest.raises(ConfigError, match=message):
            load_config(path)


@pytest.mark.parametrize("key, toml, value, says", [
    ("injected_failed_calls", "0.5", 0.5, "is a share of the injected attempts"),
    ("injected_baseline", '"batch"', "batch", "sets the baseline"),
    ("injected_redraws", "2", 2, "redraws groups started from an injected attempt"),
    ("replay_own_errors", "true", True, "chooses how injected groups start"),
])
def test_injected_error_options_without_injected_errors_are_refused(tmp_path, key, toml, value, says):
    path = tmp_path / "c.toml"
    path.write_text(f"[training]\n{key} = {toml}\n")
    with pytest.raises(ConfigError, match=f"training.{key} {says}.*injected_errors is 0"):
        load_config(path)
    path.write_text(f"[training]\ninjected_errors = 0.5\n{key} = {toml}\n")
    assert getattr(load_config(path).training, key) == value


def test_a_verify_instruction_reaches_the_agent_only_when_set(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[agent]\nverify_instruction = 'Check it. A tool error is not a result.'\n")
    assert load_config(path).agent.build_options()["verify_instruction"] == "Check it. A tool error is not a result."
    path.write_text("[agent]\nmax_turns = 4\n")
    assert "verify_instruction" not in load_config(path).agent.build_options()


def test_refuse_repeats_reaches_the_agent(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[agent]\nrefuse_repeats = true\n")
    assert load_config(path).agent.build_options()["refuse_repeats"] is True
    path.write_text("[agent]\nmax_turns = 4\n")
    assert load_config(path).agent.build_options()["refuse_repeats"] is False


def test_the_check_rule_is_one_of_two_and_reaches_the_rollout(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[rewards]\ncheck = 0.5\ncheck_rule = 'computation'\n")
    assert load_config(path).rewards.check_rule == "computation"
    path.write_text("[rewards]\ncheck_rule = 'text'\n")
    with pytest.raises(ConfigError, match="check_rule"):
        load_config(path)
