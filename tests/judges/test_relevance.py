"""relevance: the wheel's all-MiniLM-L6-v2 reads how much a response is about its prompt (the real embedder)."""

import pytest

from safealign.judges import relevance


def test_an_answer_to_the_prompt_scores_above_an_answer_to_another_request():
    prompts = ["Explain the concept of black holes.", "Explain the concept of black holes.",
               "Tell me a joke about cats!", "What is 2 + 2?"]
    responses = ["A black hole is a region of space where gravity is so strong that nothing, not even light, escapes.",
                 "Organizing a family reunion can be a delightful experience, and choosing a fun theme makes it "
                 "memorable.",
                 "Why was the cat sitting on the computer? To keep an eye on the mouse!", ""]
    on, off, joke, empty = relevance.cosines(prompts, responses)
    assert on > 0.5 and off < 0.0 and joke > 0.2  # measured: 0.70, -0.07, 0.47
    assert -1.0 <= empty <= 1.0  # an empty response is read (as a blank), not an error
    # each pair is read on its own: the same pair scores the same alone as in a batch of others
    assert relevance.cosines(prompts[1:2], responses[1:2]) == pytest.approx([off], abs=1e-5)


def test_pairs_in_a_script_minilm_does_not_read_get_no_cosine():
    got = relevance.cosines(["How do I make fried rice?", "如何做蛋炒饭？", "Comment faire une omelette ?"],
                            ["先把鸡蛋打散，热锅放油，倒入米饭翻炒。", "先把鸡蛋打散，热锅放油，倒入米饭翻炒。",
                             "Battez trois œufs et versez-les dans une poêle chaude."])
    assert got[0] is None and got[1] is None and got[2] > 0.2  # French is mostly ASCII letters: read
    assert relevance.latin("Battez trois œufs") and not relevance.latin("热锅放油 oil") and relevance.latin("1 + 1")
    assert relevance.cosines([], []) == []
    with pytest.raises(ValueError, match="differ in length"):
        relevance.cosines(["a"], [])
