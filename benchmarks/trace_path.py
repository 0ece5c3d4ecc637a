"""Which package modules one config passes through on its way from ``run_experiment`` to the metrics, traced.

Every Python call is observed through ``sys.setprofile``; a frame belongs to the package module of its file. For
each call the stack is reduced to its chain of modules (consecutive frames of one module merged). The script reports

- the modules visited, in the order they are first entered;
- **re-entries going down**: calls that enter a module already on the chain below them (A → B → A: a module that
  calls out and is called back before it returns, e.g. a function that calls itself through another module), apart
  from **callbacks** (A hands B a function of its own, a lambda or a closure such as a forward hook, and B calls it);
  module bodies run by an import are not calls of the run path and are left out;
- **recursion**: calls of a package function already on the stack (``run_experiment`` calling itself through a
  helper, say);
- **returns to a module already left**: in the sequence of module changes of the whole run, how often control
  comes back to a module it had left (callers resuming after a call are the normal case: they are counted apart,
  as returns, from calls into a module entered before).

    python benchmarks/trace_path.py                 # smoke, FM attack, act_bound, one fresh run
    python benchmarks/trace_path.py --defense krum
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import paper_repro as pr

PKG = Path(pr.__file__).resolve().parent


def module_of(filename: str) -> str | None:
    try:
        rel = Path(filename).resolve().relative_to(PKG)
    except ValueError:
        return None
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def trace(cfg, results_dir: str) -> dict:
    chain: list[str] = []  # modules on the stack, merged
    depth: list[str | None] = []  # module of every package frame on the stack (None: outside the package)
    first: list[str] = []
    reentries: collections.Counter = collections.Counter()
    callbacks: collections.Counter = collections.Counter()
    codes: list = []  # code objects of the package frames on the stack
    recursion: collections.Counter = collections.Counter()
    examples: dict[tuple, None] = {}
    calls_into_entered = 0

    def prof(frame, event, arg):
        nonlocal calls_into_entered
        if event not in ("call", "return"):
            return
        mod = module_of(frame.f_code.co_filename)
        if mod is None or frame.f_code.co_name == "<module>":
            return
        if event == "call":
            if frame.f_code in codes:
                recursion[frame.f_code.co_qualname] += 1
            codes.append(frame.f_code)
            if mod not in first:
                first.append(mod)
            if not chain or chain[-1] != mod:
                if mod in chain:
                    callback = "<locals>" in frame.f_code.co_qualname or frame.f_code.co_name == "<lambda>"
                    (callbacks if callback else reentries)[mod] += 1
                    examples.setdefault((tuple(chain[chain.index(mod) :] + [mod]), frame.f_code.co_qualname), None)
                elif mod in first[:-1] and (not depth or depth[-1] != mod):
                    calls_into_entered += 1
                chain.append(mod)
                depth.append(mod)
            else:
                depth.append(None)
        else:
            if codes:
                codes.pop()
            if depth and depth.pop() is not None:
                chain.pop()

    sys.setprofile(prof)
    try:
        res = pr.run_experiment(cfg, results_dir, progress=False)
    finally:
        sys.setprofile(None)
    return {
        "final": {k: float(res.final[k]) for k in ("acc", "asr")},
        "modules": first,
        "reentries_going_down": sum(reentries.values()),
        "reentered": dict(reentries),
        "callbacks": dict(callbacks),
        "recursion": dict(recursion),
        "examples": [f"{' → '.join(e)}  ({name})" for e, name in list(examples)[:8]],
        "calls_into_a_module_entered_before": calls_into_entered,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attack", default="fm")
    p.add_argument("--defense", default="act_bound")
    a = p.parse_args()
    cfg = pr.load_config("smoke", attack={"kind": a.attack}, defense={"name": a.defense})
    with tempfile.TemporaryDirectory() as tmp:
        out = trace(cfg, tmp)
    print(f"{len(out['modules'])} modules visited: {' '.join(out['modules'])}")
    print(
        f"re-entries going down (A → … → A on one stack): {out['reentries_going_down']} {out['reentered']}; "
        f"callbacks: {out['callbacks']}"
    )
    for e in out["examples"]:
        print("   ", e)
    print(f"recursive calls: {out['recursion']}")
    print(f"calls into a module entered before (not on the stack): {out['calls_into_a_module_entered_before']}")
    print(f"final ACC/ASR: {out['final']}")
