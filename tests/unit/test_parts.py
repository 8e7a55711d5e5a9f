"""The builder's plan (bienc.store.parts.plan_job): how an Edge collection's parts grow."""

from bienc.store.parts import ABSORB, plan_job

THRESHOLD = 10_000  # points a part is sealed at


def simulate(points: int, idle_every: int) -> tuple[dict[str, int], int]:
    """Ingest `points` a sealed part at a time, the builder keeping up, the collection idle
    after every `idle_every` parts; returns the indexed parts at the end (after an idle
    spell) and how many points the builder wrote in all."""
    indexed: dict[str, int] = {}
    written = 0
    number = 0

    def run(sealed: dict[str, int], idle: bool) -> None:
        nonlocal written, number
        while True:
            sources = plan_job(sealed, indexed, idle)
            if not sources:
                return
            size = sum(sealed.pop(n, 0) or indexed.pop(n) for n in sources)
            written += size
            number += 1
            indexed[f"m{number}"] = size

    for step in range(points // THRESHOLD):
        run({f"s{step}": THRESHOLD}, idle=False)
        if (step + 1) % idle_every == 0:
            run({}, idle=True)
    run({}, idle=True)
    return indexed, written


def test_sealed_parts_are_indexed_together_with_the_small_indexed_ones() -> None:
    sources = plan_job({"p9": 10, "p8": 10}, {"p1": 100, "p5": 40, "p7": 10}, idle=False)
    assert sorted(sources) == ["p5", "p7", "p8", "p9"]  # p1 is more than ABSORB x 20 points
    assert ABSORB * 20 < 100


def test_nothing_to_do_without_sealed_parts_until_idle() -> None:
    assert plan_job({}, {"p1": 100, "p2": 10}, idle=False) == []
    assert plan_job({}, {"p1": 100}, idle=True) == []
    assert plan_job({}, {"p1": 100, "p2": 30}, idle=True) == ["p1", "p2"]


def test_an_idle_collection_ends_in_at_most_two_parts() -> None:
    for points, idle_every in ((1_000_000, 1), (1_000_000, 7), (300_000, 1000)):
        indexed, _ = simulate(points, idle_every)
        assert sum(indexed.values()) == points
        assert len(indexed) <= 2, indexed


def test_each_point_is_rebuilt_a_bounded_number_of_times() -> None:
    """Even when the collection goes idle after every sealed part (the worst case for the
    idle merges), the builder writes each point only a few times, not once per merge."""
    for idle_every in (1, 3, 1000):
        _, written = simulate(1_000_000, idle_every)
        assert written <= 12 * 1_000_000, (idle_every, written / 1_000_000)
