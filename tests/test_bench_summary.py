"""`make bench`'s per-request overhead figure: pairs each prompt's platform and engine-alone latencies."""
from bench.__main__ import paired_overhead_ms
from bench.runner import Run
from bench.targets import Answer


def _run(name: str, latencies_ms: list[float], errors: tuple[int, ...] = ()) -> Run:
    answers = [Answer(ms / 1000, 32, "text", error="refused" if i in errors else "")
               for i, ms in enumerate(latencies_ms)]
    return Run(name, 1, answers, sum(latencies_ms) / 1000)


def test_the_overhead_is_the_median_of_each_prompts_difference():
    # Answers of 300 to 900 ms; the platform adds 10 ms to each, and 200 ms to one slow moment.
    engine = _run("engine alone", [300, 900, 500, 700, 600])
    platform = _run("platform /generate", [310, 910, 700, 710, 610])
    assert paired_overhead_ms(platform, engine) == 10.0
    # the difference of the two p50s reads the spread between prompts instead: 700 - 600
    assert platform.latency_ms(50) - engine.latency_ms(50) == 100.0


def test_failed_requests_are_left_out_of_the_pairs():
    # A failed request's latency says nothing about overhead: counted, these two would pull the median to -400.
    engine = _run("engine alone", [300, 400, 500])
    platform = _run("platform /generate", [312, 0, 0], errors=(1, 2))
    assert paired_overhead_ms(platform, engine) == 12.0
    assert paired_overhead_ms(engine, _run("engine alone", [288, 0, 0], errors=(1, 2))) == 12.0


def test_no_figure_without_both_runs():
    assert paired_overhead_ms(None, _run("engine alone", [300])) is None
    assert paired_overhead_ms(_run("platform /generate", [0], errors=(0,)), _run("engine alone", [300])) is None
