"""How the studies' walk groups its batches: the trainings a batch still needs, and batches packed so that no
worker waits at a batch's end (:func:`paper_repro.studies.calibrated.walk`)."""

from __future__ import annotations

from ..options import RunOptions


def trainings_needed(batch: list, results_dir=None, options: RunOptions | None = None) -> int:
    """How many trainings the (labels, config) pairs of ``batch`` still need: the runs neither the results folder nor
    the ledger serves, counted once per training they use (post-fusion defenses share their no-defense training)."""
    from ..runner import jobs_for, plan_run, served

    todo = {}
    for _, cfg in batch:
        run = plan_run(cfg, results_dir, options)
        if run.key not in todo and served(run) is None:
            todo[run.key] = run
    return len(jobs_for(list(todo.values())))


def packed(sizes: dict[str, int], jobs: int) -> list[list[str]]:
    """Batch names in order, packed into groups that run together: a batch whose trainings leave a worker idle at
    its end (its count not a multiple of ``jobs``) takes the next batch that needs trainings with it, once (so a
    group is at most two batches that compute, and the budget is still judged group by group). Batches that need
    no training ride with the group before them."""
    groups: list[list[str]] = []
    open_ = False  # the last group has one computing batch whose count leaves a worker idle
    for name, n in sizes.items():
        if groups and (n == 0 or open_):
            groups[-1].append(name)
            if n:
                open_ = False
            continue
        groups.append([name])
        open_ = jobs > 1 and n % jobs != 0
    return groups
