"""The methods of the papers' tables: one registry read by the command line (`method=NAME`) and by the report
(row names and their order).

A method is a choice of acq + schedule + init (+ the few keys it sets itself); `method=granet` selects them
at once, in any experiment, and a run's row name is found from what it ran (`method_label`), so
`acq=rigl schedule=gradual` is the `granet` row too. Adding a method here is one entry (plus its
Acquisition class if the acq is new).
"""
from dataclasses import dataclass, field

DEFAULT_SCHEDULE = "itop"  # the schedule of the recipe DST-EE builds on, and of every method not saying otherwise
DEFAULT_INIT = "random"
DENSE = "dense"
STATIC = "static"  # the acq that keeps its initial mask


@dataclass(frozen=True)
class Method:
    name: str
    acq: str
    schedule: str = DEFAULT_SCHEDULE
    init: str = DEFAULT_INIT
    sets: dict = field(default_factory=dict)  # other config keys the method sets, by dotted key
    reference: str = ""


def acquisition_schedule_defaults(acq: str) -> dict:
    """The schedule fields an acquisition defaults to (DSR: regrow_dropped=false), as dotted config keys."""
    from dst_cli.sparse.acquisition import ACQUISITIONS

    return {f"schedule.{key}": value for key, value in ACQUISITIONS.classes[acq].schedule_defaults.items()}


# In the order of the rows of the DST-EE / RigL / GraNet tables.
METHODS = (
    Method(DENSE, STATIC, sets={"sparsity": 0.0}, reference="dense baseline: every weight active, no mask updates"),
    Method("snip", STATIC, init="snip", reference="SNIP (Lee et al., ICLR 2019): pruning at initialization"),
    Method("grasp", STATIC, init="grasp", reference="GraSP (Wang et al., ICLR 2020): pruning at initialization"),
    Method("synflow", STATIC, init="synflow",
           reference="SynFlow (Tanaka et al., NeurIPS 2020): pruning at initialization"),
    Method(STATIC, STATIC, reference="a random mask kept fixed: the lower bound of mask search"),
    Method("random", "random", reference="random drop and random growth: the pure-noise control"),
    Method("set", "set", reference="SET (Mocanu et al., Nat. Commun. 2018)"),
    Method("dsr", "dsr", reference="DSR (Mostafa & Wang, ICML 2019)"),
    Method("snfs", "snfs", reference="SNFS, sparse momentum (Dettmers & Zettlemoyer, 2019)"),
    Method("rigl", "rigl", schedule="rigl", reference="RigL (Evci et al., ICML 2020) with its own schedule"),
    Method("mest", "mest", reference="MEST (Yuan et al., NeurIPS 2021)"),
    Method("rigl-itop", "rigl", reference="RigL-ITOP (Liu et al., ICML 2021): RigL growth on the ITOP schedule"),
    Method("granet", "rigl", schedule="gradual",
           reference="GraNet (Liu et al., NeurIPS 2021): gradual pruning + RigL regrowth"),
    Method("ee", "ee", reference="DST-EE (Huang et al., DAC 2023): gradient + exploration bonus"),
)
ROW_ORDER = tuple(method.name for method in METHODS)


def method_sets(method: Method) -> dict:
    """Every config key `method=NAME` sets besides the group choices: its own and its acq's schedule defaults."""
    return {**acquisition_schedule_defaults(method.acq), **method.sets}


def method_label(acq: str | None, schedule: str | None, init: str | None, sparsity: float | None) -> str:
    """The row name of a run: "dense" at sparsity 0; the registered method that runs this acq and schedule
    (with this init, or for a dynamic method any init: the report then shows the init as an option);
    otherwise its acq (or, for a static mask scored at initialization, the init), with the schedule added
    when it is not the one that acq's method runs ("set-rigl")."""
    if sparsity == 0:
        return DENSE
    sparse_methods = [method for method in METHODS if method.name != DENSE]
    for method in sparse_methods:
        if (method.acq, method.schedule, method.init) == (acq, schedule, init):
            return method.name
    for method in sparse_methods:
        if acq != STATIC and (method.acq, method.schedule, method.init) == (acq, schedule, DEFAULT_INIT):
            return method.name
    name = init if acq == STATIC and init not in (None, DEFAULT_INIT) else str(acq)
    own = next((m.schedule for m in METHODS if m.name == acq), DEFAULT_SCHEDULE)
    return name if schedule in (None, own) else f"{name}-{schedule}"
