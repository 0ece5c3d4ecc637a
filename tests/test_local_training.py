"""The batched engine computes what the per-client reference loop computes."""

import pandas as pd
import pytest
import torch

from paper_repro.local_training import batched_local_train, can_batch, threaded_local_train
from paper_repro.models import build_model
from paper_repro.training import local_train

TOL = dict(rtol=1e-4, atol=1e-5)  # float32 rounding of differently ordered reductions, 1-2 epochs


def _clients(sizes, shape=(1, 28, 28), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand((n, *shape), generator=g), torch.randint(0, 10, (n,), generator=g)) for n in sizes]


@pytest.mark.parametrize("name,shape", [("cnn", (1, 28, 28)), ("tiny", (1, 12, 12))])
def test_batched_equals_the_per_client_loop(name, shape):
    # Prepare: unequal client sizes (short last batches, clients running out early, one empty client)
    model = build_model(name, shape, 10, seed=0)
    data = _clients([70, 33, 5, 0, 64], shape)
    kw = dict(epochs=2, lr=0.05, momentum=0.5, batch_size=16)
    # Execute
    ref = torch.stack(
        [local_train(model, x, y, generator=torch.Generator().manual_seed(k), **kw) for k, (x, y) in enumerate(data)]
    )
    out = batched_local_train(
        model, data, generators=[torch.Generator().manual_seed(k) for k in range(len(data))], **kw
    )
    # Assert
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, **TOL)
    assert not torch.equal(out[0], out[1])  # clients really trained differently


def test_threaded_clients_equal_the_loop_and_restore_the_thread_count():
    # Prepare
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    data = _clients([40, 17, 0, 33])
    kw = dict(epochs=1, lr=0.05, momentum=0.5, batch_size=16)
    before = torch.get_num_threads()
    # Execute
    ref = torch.stack(
        [local_train(model, x, y, generator=torch.Generator().manual_seed(k), **kw) for k, (x, y) in enumerate(data)]
    )
    out = threaded_local_train(
        model, data, generators=[torch.Generator().manual_seed(k) for k in range(4)], workers=2, **kw
    )
    # Assert: same clients, same order, same numbers up to the summation order of one vs several threads
    torch.testing.assert_close(out, ref, **TOL)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="generators"):
        threaded_local_train(model, data, 1, 0.1, 0.0, 4, [torch.Generator()])


def test_threaded_clients_do_not_depend_on_the_core_count():
    # Prepare: the same round on machines with 1, 2 and 4 cores (torch threads), and 2 or 3 clients at once
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    data = _clients([40, 17, 33])
    kw = dict(epochs=1, lr=0.05, momentum=0.5, batch_size=16)
    before = torch.get_num_threads()

    def run(threads, workers=None):
        torch.set_num_threads(threads)
        try:
            return threaded_local_train(
                model, data, generators=[torch.Generator().manual_seed(k) for k in range(3)], workers=workers, **kw
            )
        finally:
            torch.set_num_threads(before)

    # Execute
    outs = [run(1), run(2), run(4), run(4, workers=2), run(2, workers=3)]
    loop_one_thread = run(1, workers=1)
    # Assert: bit for bit the same numbers however many cores and workers, equal to the loop on one thread
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    assert torch.equal(loop_one_thread, outs[0])


def test_the_default_cpu_engine_is_threads():
    from paper_repro.local_training import train_clients

    model = build_model("tiny", (1, 12, 12), 10, seed=0)
    data = _clients([8, 5], (1, 12, 12))
    gens = lambda: [torch.Generator().manual_seed(k) for k in range(2)]  # noqa: E731
    auto = train_clients("auto", "cpu", model, data, 1, 0.1, 0.0, 4, gens())
    assert torch.equal(auto, train_clients("threads", "cpu", model, data, 1, 0.1, 0.0, 4, gens()))


def test_models_with_batchnorm_fall_back_to_the_loop():
    model = build_model("resnet18", (3, 32, 32), 10, seed=0)
    assert not can_batch(model)
    data = _clients([6, 4], (3, 32, 32))
    kw = dict(epochs=1, lr=0.01, momentum=0.0, batch_size=4)
    ref = torch.stack(
        [local_train(model, x, y, generator=torch.Generator().manual_seed(k), **kw) for k, (x, y) in enumerate(data)]
    )
    out = batched_local_train(model, data, generators=[torch.Generator().manual_seed(k) for k in range(2)], **kw)
    assert torch.equal(out, ref)


def test_generator_count_must_match():
    model = build_model("tiny", (1, 12, 12), 10, seed=0)
    with pytest.raises(ValueError, match="generators"):
        batched_local_train(model, _clients([4, 4], (1, 12, 12)), 1, 0.1, 0.0, 4, [torch.Generator()])


@pytest.mark.smoke
def test_fl_run_with_every_engine_matches_the_loop_and_the_engine_is_not_in_the_config():
    import paper_repro as pr
    from paper_repro.fl import run_federated
    from paper_repro.options import OptionsError

    engines = ("loop", "batched", "threads", "auto")
    cfg = pr.load_config("smoke", attack={"kind": "classic"})
    prep = pr.prepare(cfg, progress=False)
    hist = [
        pd.DataFrame(
            run_federated(
                cfg, prep.inputs, pr.defenses.get("none"), pr.RunOptions.for_profile("smoke", engine=e), progress=False
            ).history
        )
        for e in engines
    ]
    for h in hist[1:]:
        pd.testing.assert_series_equal(hist[0]["acc"], h["acc"], atol=0.02, rtol=0)
    with pytest.raises(OptionsError, match="engine"):
        pr.RunOptions(engine="vmap")
    with pytest.raises(pr.ConfigError, match=r"execution setting.*RunOptions\(engine=\.\.\.\)"):
        pr.load_config("smoke", fl={"engine": "loop"})


# ------------------------------------------------------------------------------------------------ bf16 option
# bf16 vs fp32 local training, same data order, 2 epochs on 800 real images per client: the updates point the same
# way (cosine ≥ 0.95; measured 0.98) and test accuracies differ by ≤ 0.05 (measured ≤ 0.023; at this early stage of
# training one seed alone moves accuracy by a few points)
BF16_MIN_COSINE, BF16_ACC_TOL = 0.95, 0.05


def _fmnist(n_train=1600, n_test=1000):
    from paper_repro.data import load_dataset

    train, test = load_dataset("fashion_mnist")
    x, y = train.tensors()
    xt, yt = test.tensors()
    return (x[:n_train], y[:n_train]), (xt[:n_test], yt[:n_test])


@pytest.mark.claims  # real Fashion-MNIST, ~20 s each
@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_bf16_training_stays_within_tolerance_of_fp32(engine):
    from paper_repro.models import load_flat_state
    from paper_repro.training import accuracy

    # Prepare: two clients of real Fashion-MNIST, the quick CNN, the same data order for both precisions
    (x, y), (xt, yt) = _fmnist()
    model = build_model("cnn", (1, 28, 28), 10, seed=0)
    data = [(x[:800], y[:800]), (x[800:], y[800:])]
    kw = dict(epochs=2, lr=0.05, momentum=0.5, batch_size=32)

    def train(precision):
        gens = [torch.Generator().manual_seed(k) for k in range(2)]
        if engine == "batched":
            return batched_local_train(model, data, generators=gens, precision=precision, **kw)
        return torch.stack(
            [
                local_train(model, cx, cy, generator=g, channels_last=True, precision=precision, **kw)
                for (cx, cy), g in zip(data, gens)
            ]
        )

    # Execute
    fp32, bf16 = train("fp32"), train("bf16")
    # Assert: bf16 really changed the arithmetic, the weights moved alike and the models classify alike
    assert not torch.equal(fp32, bf16)
    start = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    for k in range(2):
        cos = torch.nn.functional.cosine_similarity(fp32[k] - start, bf16[k] - start, dim=0)
        assert cos >= BF16_MIN_COSINE, f"client {k}: bf16 update points elsewhere (cosine {cos:.3f})"
        accs = [
            accuracy(load_flat_state(build_model("cnn", (1, 28, 28), 10, seed=0), s[k]), xt, yt) for s in (fp32, bf16)
        ]
        assert accs[0] > 0.4  # the task is really learned (chance: 0.1)
        assert abs(accs[0] - accs[1]) <= BF16_ACC_TOL, accs


def test_precision_is_in_the_run_key_but_fp32_keeps_the_old_key():
    import paper_repro as pr
    from paper_repro.results import key_dict, run_key

    base = pr.load_config("smoke")
    bf16 = pr.load_config("smoke", fl={"precision": "bf16"})
    fm_bf16 = pr.load_config("smoke", fm={"precision": "bf16"})
    assert len({run_key(base), run_key(bf16), run_key(fm_bf16)}) == 3
    old = base.to_dict()  # a config saved before the precision fields existed, with the execution settings of then
    del old["fl"]["precision"], old["fm"]["precision"]
    old["fm"]["compile"], old["fl"]["engine"], old["device"] = True, "threads", "cuda"
    assert key_dict(old) == key_dict(base.to_dict())
    for section in ("fl", "fm"):
        with pytest.raises(pr.ConfigError, match=f"{section}.precision"):
            pr.load_config("smoke", **{section: {"precision": "fp16"}})
