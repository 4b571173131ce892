"""The LangGraph agent: model backends, action protocols, the self-correcting graph, the CLI."""

from agent.policy import Generation, Policy, SamplingParams

__all__ = ["Generation", "Policy", "SamplingParams", "build_agent", "HFPolicy", "load_model", "PolicyChatModel"]


def __getattr__(name: str):  # heavy imports (torch, langgraph) only when asked for
    if name == "build_agent":
        from agent.graph import build_agent

        return build_agent
    if name == "HFPolicy":
        from agent.hf_policy import HFPolicy

        return HFPolicy
    if name == "load_model":
        from agent.models import load_model

        return load_model
    if name == "PolicyChatModel":  # a LangChain chat model over any Policy (agent.chat_model)
        from agent.chat_model import PolicyChatModel

        return PolicyChatModel
    raise AttributeError(name)
