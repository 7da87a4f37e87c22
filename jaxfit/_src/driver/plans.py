"""Plans: a training or evaluation call's data, as sources, with its compiled steps.

One fit plan and one eval plan, whatever the data: ``fit`` and ``fit_dataset``
differ only in the source they build (``ArraySource`` or ``StreamSource``, the
data seam) and in what their arguments say about validation. ``Prepare`` is the
trainer's compiler bound to its spec and state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxfit._src import errors
from jaxfit._src.core.placement import Placement
from jaxfit._src.data import arrays, checks, iterables, sources
from jaxfit._src.driver import evaluating, loop, validate, yield_policy
from jaxfit._src.driver.arguments import FitArgs, StreamFitArgs
from jaxfit._src.driver.compiler import Compiled
from jaxfit._src.driver.population import source as population_source

# (x, y, batch_size, accumulate_steps, argname) -> Compiled
Prepare = Callable[..., Compiled]


def array_source(
    data: dict[str, Any], n: int, batch_size: int, where: Placement, **kwargs: Any
) -> sources.ArraySource:
    members = getattr(where, "members", 0)
    if kwargs.get("shuffle") and members > 1:  # a population: each member's order
        return population_source.MemberArraySource(
            data,
            n,
            batch_size,
            members=members,
            put_members=where.put_member_block,  # type: ignore[attr-defined]
            offsets=where.offsets,  # type: ignore[attr-defined]
            put=where.put_block,
            rows=where.local_rows,
            pad_to=where.padded,
            **kwargs,
        )
    return sources.ArraySource(
        data,
        n,
        batch_size,
        put=where.put_block,
        rows=where.local_rows,
        pad_to=where.padded,
        **kwargs,
    )


def stream_source(
    dataset: Any, argname: str, where: Placement, **kwargs: Any
) -> sources.StreamSource:
    """A stream (``kwargs``: class weights, steps_per_epoch, fill_ms...)."""
    return sources.StreamSource(
        dataset,
        argname,
        put=where.put_block,
        multiple=where.local_multiple,
        processes=jax.process_count(),
        **kwargs,
    )


def fit_plan(
    prepare: Prepare,
    where: Placement,
    seed: Callable[[], int],
    x: Any,
    y: Any,
    args: FitArgs,
) -> loop.FitPlan:
    """``fit`` on arrays: the validation split (before class weights, which
    weight training batches only), the source, the compiled steps."""
    data, n = arrays.standardize(x, y, args.sample_weight)
    _samples(n, "x", data)
    if args.class_weight is not None:  # every class of the whole y, before any split
        checks.check_class_weight(args.class_weight, data["y"])
    data, n, validation = _held_out(data, n, args)
    data = arrays.with_class_weight(data, args.class_weight)
    source = array_source(
        data,
        n,
        args.batch_size,
        where,
        shuffle=bool(args.shuffle),
        seed=seed,
        steps_per_epoch=args.steps_per_epoch,
    )
    compiled = prepare(*source.example, source.batch_size, args.accumulate_steps)
    val_plan = None
    if validation is not None:
        argname = "validation_data." if args.validation_data is not None else ""
        val_plan = array_eval_plan(
            prepare,
            where,
            *validation,
            args.validation_batch_size or args.batch_size,
            args.validation_steps,
            args.accumulate_steps,
            argname,
            _policy(args, validation=True),
        )
    policy = _policy(args)
    return loop.FitPlan(
        source,
        args.epochs,
        args.initial_epoch,
        policy,
        val_plan,
        args.validation_freq,
        compiled,
        source.capacity(compiled.fuse and not policy.per_batch),
        prime=True,
    )


def _refuse_one_shot(dataset: Any, args: StreamFitArgs) -> None:
    """A one-shot iterator (training or validation) cannot make a second pass."""
    passes = args.epochs - args.initial_epoch
    if (
        iterables.Stream(dataset, "dataset").one_shot
        and args.steps_per_epoch is None
        and passes > 1
    ):
        raise ValueError(iterables.one_shot_message("dataset", args.initial_epoch + 1))
    validation_data = args.validation_data
    if (
        validation_data is not None
        and not isinstance(validation_data, tuple)
        and iterables.Stream(validation_data, "validation_data").one_shot
        and passes > 1
    ):
        raise ValueError(
            iterables.one_shot_message("validation_data", args.initial_epoch + 1)
        )


def _held_out(
    data: dict[str, Any], n: int, args: FitArgs
) -> tuple[dict[str, Any], int, tuple[dict[str, Any], int] | None]:
    """The training data and its validation data (``validation_data``, or the
    last ``validation_split`` of ``data``), each with its number of samples."""
    if args.validation_data is not None:
        vx, vy, *vw = args.validation_data
        validation = arrays.standardize(
            vx, vy, vw[0] if vw else None, "validation_data."
        )
        _samples(validation[1], "validation_data.x", validation[0])
        return data, n, validation
    if args.validation_split <= 0:
        return data, n, None
    data, held_out = arrays.split_last(data, n, args.validation_split)
    val_n = int(held_out["sample_weight"][0].shape[0])
    if n - val_n == 0 or val_n == 0:
        raise ValueError(
            errors.expected(
                "validation_split",
                "a fraction leaving samples on both sides",
                args.validation_split,
            )
        )
    return data, n - val_n, (held_out, val_n)


def _policy(args: Any, validation: bool = False) -> yield_policy.YieldPolicy:
    """A yield policy of the fit's ``yield_every`` (training and validation
    each have their own: their step times differ). With several processes
    validation runs whole blocks with no yield point inside (its processes
    would otherwise have to agree on a step time of their own)."""
    processes = jax.process_count()
    if validation and processes > 1:
        return yield_policy.parse("epoch", args.now, processes)
    return yield_policy.parse(args.yield_every, args.now, processes)


def _samples(n: int, argname: str, data: dict[str, Any]) -> None:
    """Refuses data of no samples (an empty split, a filter that kept nothing)."""
    if n == 0:
        raise ValueError(errors.expected(argname, "at least one sample", data["x"]))


def stream_fit_plan(
    prepare: Prepare, where: Placement, dataset: Any, args: StreamFitArgs
) -> loop.FitPlan:
    """``fit_dataset``: a one-shot iterator (training or validation) is refused
    before anything is read when more than one pass is needed; the first batch
    is traced and checked."""
    _refuse_one_shot(dataset, args)
    policy = _policy(args)
    source = stream_source(
        dataset,
        "dataset",
        where,
        class_weight=args.class_weight,
        steps_per_epoch=args.steps_per_epoch,
        initial_epoch=args.initial_epoch,
        fill_ms=policy.every_ms,
        producer_timeout=args.producer_timeout,
    )
    compiled = prepare(*source.example, source.batch_size, 1, "dataset batch 0: ")
    source.check_labels(compiled)
    validation = eval_plan(
        prepare,
        where,
        args.validation_data,
        args.validation_batches,
        source.batch_size,
        "validation_data",
        compiled,
        args.producer_timeout,
        _policy(args, validation=True),
    )
    return loop.FitPlan(
        source,
        args.epochs,
        args.initial_epoch,
        policy,
        validation,
        1,
        compiled,
        source.capacity(compiled.fuse and not policy.per_batch),
    )


def array_eval_plan(
    prepare: Prepare,
    where: Placement,
    data: dict[str, Any],
    n: int,
    batch_size: int,
    steps: int | None,
    accumulate_steps: int = 1,
    argname: str = "",
    policy: yield_policy.YieldPolicy | None = None,
) -> evaluating.EvalPlan:
    """Evaluation over standardised arrays in padded, masked batches; without a
    ``policy`` (``evaluate``) in blocks as large as they can be, synced once."""
    _samples(n, argname + "x", data)
    source = array_source(data, n, batch_size, where, argname=argname)
    compiled = prepare(*source.example, source.batch_size, accumulate_steps, argname)
    return evaluating.EvalPlan(
        source,
        compiled,
        limit=steps,
        capacity=source.capacity(compiled.fuse, steps),
        policy=policy or yield_policy.parse("epoch"),
    )


def eval_plan(
    prepare: Prepare,
    where: Placement,
    data: Any,
    batches: int | None,
    batch_size: int,
    argname: str,
    compiled: Compiled | None = None,
    producer_timeout: float | None = None,
    policy: yield_policy.YieldPolicy | None = None,
) -> evaluating.EvalPlan | None:
    """Evaluation over a tuple of arrays or a stream of batches (``None`` for no
    data). ``compiled`` is the training step's (validation shares its structure);
    without it the stream's first batch builds the eval step. A stream waits at
    most ``producer_timeout`` seconds for each batch."""
    if data is None:
        return None
    if isinstance(data, tuple):
        validate.validation_data(data)
        vx, vy, *vw = data
        standard, n = arrays.standardize(vx, vy, vw[0] if vw else None, argname + ".")
        return array_eval_plan(
            prepare,
            where,
            standard,
            n,
            batch_size,
            batches,
            argname=argname + ".",
            policy=policy,
        )
    source = stream_source(
        data, argname, where, producer_timeout=producer_timeout, evaluation=True
    )
    if compiled is None:
        compiled = prepare(
            *source.example, source.batch_size, 1, f"{argname} batch 0: "
        )
    source.check_labels(compiled)
    return evaluating.EvalPlan(
        source,
        compiled,
        limit=batches,
        required_batches=batches,
        capacity=source.capacity(compiled.fuse, batches),
        policy=policy or yield_policy.parse("epoch"),
    )
