"""Shortlists alone, no model: for the rule misses of the golden set, a built dataset's splits and
the label-typo suite, how often the lexical index's candidates hold the right label, their size,
and how often a single candidate is right.

    .venv/bin/python bench/retrieval_quality.py DATA_DIR
"""

import collections
import sys

from llama_mapper.evaluation.evalset import default_eval_set_uri, load_eval_set
from llama_mapper.evaluation.robustness import build_suite
from llama_mapper.inference.hybrid import HybridMapper

h = HybridMapper(lexical_coverage=None)  # every rule miss, singles too: what the index offers


def probe(name, cases):
    st = collections.Counter()
    sizes = 0
    for c in cases:
        if getattr(c, "native", None) is not None:
            plan = h.plan(c.detector, c.native)
            if len(plan.pending) != 1:
                continue
        else:
            plan = h.plan_findings(c.detector, [c.normalized()])
        if not plan.pending:
            continue
        st["asked"] += 1
        r = h.index.retrieve(plan.pending[0][1])
        real = r.candidates
        exp = set(c.labels)
        sizes += len(real)
        if not real:
            st["none"] += 1
        elif exp & set(real):
            st["recall"] += 1
        elif exp <= {"other.unknown", "other.no_finding"}:
            st["unk_ok"] += 1
        if len(real) == 1:
            st["single"] += 1
            st["single_right"] += real[0] in exp
    a = st["asked"]
    print(
        f"{name:12s} asked {a:5d} recall {st['recall'] / a:.3f} (+unk {st['unk_ok'] / a:.3f}) none {st['none'] / a:.3f} size {sizes / a:.2f} single {st['single']} right {st['single_right']}"
    )


es = load_eval_set(default_eval_set_uri())
golden = list(es.measured)
probe("golden", golden)
cal = load_eval_set(f"{sys.argv[1]}/mapper-calibration.jsonl")
probe("calibration", list(cal.calibration or cal.mapper))
ho = load_eval_set(f"{sys.argv[1]}/mapper-heldout.jsonl")
probe("heldout", list(ho.mapper))
ev = load_eval_set(f"{sys.argv[1]}/mapper-eval.jsonl")
probe("eval", list(ev.mapper))
for seed in (0, 1):
    suite = build_suite(golden, seed=seed, per_perturbation=200)
    probe(f"typos{seed}", [i.findings[0] for i in suite["label_typos"]])
for lab in ["MEDICAL_RECORD_NO", "CUSTOM_TRAVEL_DOCUMENT_NO"]:
    plan = h.plan("presidio", [{"entity_type": lab, "start": 0, "end": 4, "score": 0.8}])
    print(lab, [q.candidates for q in plan.queries])
