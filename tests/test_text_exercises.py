"""The exercises graded by their outputs (bpe_merge, top_p): the references pass, the stubs and
the classic mistakes get "not yet" with the case that differs and the mistake's hint, and the
references are the library's rules (BPE training's first merge, sampling's top-p filter)."""

import numpy as np
import pytest

from tinytransformer.exercises import OUTPUT_EXERCISES, check, reference, stub
from tinytransformer.exercises import text as text_exercises
from tinytransformer.sampling import top_p_filter
from tinytransformer.tokenizers.bpe import learn_merges


@pytest.mark.parametrize("name", ["bpe_merge", "top_p"])
def test_the_reference_passes_and_the_stub_gets_not_yet(name):
    assert check(name, reference(name)).passed
    exercise, namespace = OUTPUT_EXERCISES[name], {}
    exec(stub(name), namespace)
    result = check(name, namespace[exercise.function_name])
    assert not result.passed
    assert result.report.startswith(f"not yet: {exercise.function_name} returned None: fill it in")


@pytest.mark.parametrize("name,slip", [(name, i) for name, ex in OUTPUT_EXERCISES.items()
                                       for i in range(len(ex.slips))])
def test_each_classic_mistake_is_caught_and_named(name, slip):
    mistake = OUTPUT_EXERCISES[name].slips[slip]
    result = check(name, mistake.wrong)
    assert not result.passed
    assert "  it returned " in result.report and "  expected    " in result.report
    assert result.report.endswith(f"  hint: {mistake.hint}"), result.report


def test_a_wrong_answer_no_mistake_explains_gets_no_hint():
    result = check("top_p", lambda z, p: z)                      # keeps every token
    assert not result.passed and "hint" not in result.report


def test_a_function_that_raises_gets_a_report_with_its_arguments():
    result = check("bpe_merge", lambda words, counts: words[5])
    assert result.report.startswith("not yet: bpe_merge_step raised IndexError")
    assert "called with words = [[b'a', b'b', b'a', b'b']" in result.report


def test_a_function_that_edits_its_arguments_does_not_spoil_the_next_case():
    def scribbles(words, counts):
        answer = reference("bpe_merge")(words, counts)
        words.clear()
        counts[:] = [0] * len(counts)
        return answer
    assert check("bpe_merge", scribbles).passed


def test_the_merge_is_the_first_one_bpe_training_learns():
    rng = np.random.default_rng(3)
    for _ in range(30):
        words = ["".join(rng.choice(list("abc d"), size=int(rng.integers(2, 8)))) for _ in range(4)]
        counts = {}
        for word, count in zip(words, rng.integers(1, 6, size=4)):
            counts[word.encode()] = counts.get(word.encode(), 0) + int(count)
        split = [[bytes([b]) for b in word] for word in counts]
        pair, _ = reference("bpe_merge")(split, list(counts.values()))
        assert pair == learn_merges(counts, 257)[0]


def test_the_top_p_reference_is_the_sampler_s_filter():
    rng = np.random.default_rng(4)
    z, p = rng.standard_normal((3, 11)), 0.7
    np.testing.assert_array_equal(reference("top_p")(z, p), top_p_filter(z, p))
    assert text_exercises.TOP_P.solution is reference("top_p")


def test_an_unknown_name_lists_these_exercises_too():
    with pytest.raises(KeyError, match="bpe_merge, top_p"):
        check("bpe", reference("bpe_merge"))
