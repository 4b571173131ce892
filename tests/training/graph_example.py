"""Graph factories as a user writes them, named by ``--graph tests.training.graph_example:build_graph``."""

from __future__ import annotations

import warnings

from langgraph.graph import START, MessagesState, StateGraph


def _react_agent(model, tools, **kwargs):
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():  # LangGraph 1.x points at langchain.agents, which this project does not use
        warnings.filterwarnings("ignore", message="create_react_agent has been moved")
        return create_react_agent(model, tools, **kwargs)


def build_graph(model, tools):
    """The plain ReAct agent: the history only grows, so every run is one exact, trainable row."""
    return _react_agent(model, tools)


def build_trimming_graph(model, tools):
    """A ReAct agent whose ``pre_model_hook`` shows the model only the question and the last two messages."""

    def keep_question_and_last_two(state):
        messages = state["messages"]
        return {"llm_input_messages": messages[:1] + messages[-2:] if len(messages) > 3 else messages}

    return _react_agent(model, tools, pre_model_hook=keep_question_and_last_two)


def build_raising_graph(model, tools):
    """A graph whose one node raises: every run is a failed run, none a crash."""

    def broken(state):
        raise RuntimeError("this node is broken")

    builder = StateGraph(MessagesState)
    builder.add_node("broken", broken)
    builder.add_edge(START, "broken")
    return builder.compile()


NOT_A_FUNCTION = 42
