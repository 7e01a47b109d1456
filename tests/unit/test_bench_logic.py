"""The bench's pure parts: shapes, tenant mix, CSV parsing, percentiles, the verdict, the commands."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from llama_mapper.bench import locust_stats as report
from llama_mapper.bench.locust_run import BenchConfig, locust_commands, parse_duration
from llama_mapper.bench.payloads import write_payloads
from llama_mapper.bench.shapes import plan_stages, stage_at
from llama_mapper.bench.targets import judge
from llama_mapper.bench.traffic import TenantMix, arm_name, parse_weights, split_arm
from llama_mapper.domain import rubric
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.readers.base import known_detectors, read
from llama_mapper.domain.schemas import validate

HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%"
)
STATS = f"""{HEADER}
POST,map [control],198,0,33,44.3,22.0,299.7,1056.2,24.7,0.0,33,39,48,53,68,86,260,300,300,300,300
POST,map [treatment],57,3,64,75.3,52.2,276.2,1091.8,7.1,0.4,64,72,80,82,97,160,270,280,280,280,280
POST,batch [control],3,0,140,180.7,133.7,267.9,9609.3,0.4,0.0,140,140,270,270,270,270,270,270,270,270,270
,Aggregated,258,3,45,59.3,22.0,299.7,770.9,32.2,0.4,45,58,70,80,110,140,260,280,300,300,300
"""


def test_standard_shape_ramps_holds_spikes_recovers():
    stages = plan_stages("standard", 10, 2.0, 100)
    assert [(s.name, s.until_s, s.users) for s in stages] == [
        ("ramp", 20, 10),
        ("steady", 65, 10),
        ("spike", 80, 20),
        ("recover", 100, 10),
    ]
    assert stage_at(stages, 0).name == "ramp"
    assert stage_at(stages, 70).users == 20 and stage_at(stages, 70).spawn_rate == 8.0
    assert stage_at(stages, 100) is None


def test_soak_and_constant_shapes():
    soak = plan_stages("soak", 5, 1.0, 3600)
    assert [s.users for s in soak] == [5, 5] and soak[-1].until_s == 3600
    assert plan_stages("constant", 3, 3, 4) == plan_stages("constant", 3, 3, 4)[:1]
    with pytest.raises(ValueError, match="--shape"):
        plan_stages("burst", 1, 1, 1)
    with pytest.raises(ValueError, match="positive"):
        plan_stages("standard", 0, 1, 1)


def test_tenant_mix_is_zipf():
    mix = TenantMix(100, 1.0)
    harmonic = sum(1 / k for k in range(1, 101))
    assert mix.share(1) == pytest.approx(1 / harmonic)
    assert mix.share(2) == pytest.approx(mix.share(1) / 2)
    rng = random.Random(7)
    counts = Counter(mix.draw(rng) for _ in range(20_000))
    assert counts["tenant-0001"] / 20_000 == pytest.approx(mix.share(1), abs=0.01)
    assert counts["tenant-0001"] > counts["tenant-0010"] > 0
    assert set(counts) <= set(mix.tenants)
    uniform = TenantMix(4, 0.0)
    assert [uniform.share(k) for k in range(1, 5)] == [0.25] * 4


def test_task_weights_and_arm_names():
    assert parse_weights("map=8,batch=1,analyze=0") == {"map": 8, "batch": 1}
    for bad in ("map=x", "upload=1", "map", "map=0"):
        with pytest.raises(ValueError):
            parse_weights(bad)
    assert arm_name("map", "treatment") == "map [treatment]"
    assert arm_name("Map", None) == "Map [none]"
    assert split_arm("map [treatment]") == ("map", "treatment")
    assert split_arm("Aggregated") == ("Aggregated", None)


def test_read_stats_csv(tmp_path):
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS)
    rows = report.read_stats_csv(path)
    assert [(r.name, r.arm) for r in rows] == [
        ("map [control]", "control"),
        ("map [treatment]", "treatment"),
        ("batch [control]", "control"),
        ("Aggregated", None),
    ]
    agg = report.aggregate(rows)
    assert (agg.requests, agg.failures, agg.p95_ms, agg.p99_ms) == (258, 3, 140, 280)
    assert agg.error_rate == pytest.approx(3 / 258)


def test_read_stats_csv_refuses_an_unfinished_run(tmp_path):
    path = tmp_path / "locust_stats.csv"
    path.write_text(STATS.rsplit("\n,Aggregated", 1)[0] + "\n")
    with pytest.raises(ValueError, match="Aggregated"):
        report.read_stats_csv(path)


def test_na_percentiles_read_as_nan(tmp_path):
    path = tmp_path / "locust_stats.csv"
    path.write_text(f"{HEADER}\n,Aggregated,0,0,0,0,0,0,0,0,0" + ",N/A" * 11 + "\n")
    agg = report.aggregate(report.read_stats_csv(path))
    assert agg.requests == 0 and math.isnan(agg.p95_ms)


def test_percentile_matches_locust():
    """Locust's own function, run in a child: importing locust here would gevent-patch pytest."""
    rng = random.Random(3)
    histogram = Counter(round(rng.lognormvariate(3, 0.8)) for _ in range(5000))
    script = (
        "import json, sys\n"
        "from locust.stats import calculate_response_time_percentile as p\n"
        "h = {int(k): v for k, v in json.load(sys.stdin).items()}\n"
        "print(json.dumps([p(h, sum(h.values()), q) for q in (0.5, 0.95, 0.99)]))\n"
    )
    expected = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(histogram),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = [report.percentile(histogram, q) for q in (0.5, 0.95, 0.99)]
    assert ours == json.loads(expected)
    assert math.isnan(report.percentile({}, 0.95))


def test_arm_rows_merge_histograms(tmp_path):
    csv_path = tmp_path / "locust_stats.csv"
    csv_path.write_text(STATS)
    rows = report.read_stats_csv(csv_path)
    entries = [
        {
            "name": "map [control]",
            "response_times": {"10": 190, "500": 8},
            "max_response_time": 510,
        },
        {"name": "batch [control]", "response_times": {"100": 3}, "max_response_time": 101},
        {"name": "map [treatment]", "response_times": {"60": 57}, "max_response_time": 70},
        {"name": "Aggregated", "response_times": {"1": 1}, "max_response_time": 1},
    ]
    stats_json = tmp_path / "locust.json"
    stats_json.write_text(json.dumps(entries))
    control, treatment = report.arm_rows(stats_json, rows)
    assert (control.name, control.requests, control.failures) == ("control", 201, 0)
    assert control.rps == pytest.approx(25.1)
    # 201 requests: the top 5% (10) holds the eight 500 ms and two 100 ms answers.
    assert (control.p50_ms, control.p95_ms, control.p99_ms) == (10, 100, 500)
    assert (treatment.requests, treatment.failures, treatment.p95_ms) == (57, 3, 60)
    text = report.format_rows([control, treatment])
    assert text.splitlines()[0].split()[:4] == ["type", "name", "requests", "errors"]


def test_route_rows_merge_arms_per_route(tmp_path):
    csv_path = tmp_path / "locust_stats.csv"
    csv_path.write_text(
        STATS.replace(
            ",Aggregated",
            "POST,analyze [none],20,1,40,40,30,90,500,2.5,0.1,40,40,40,40,40,90,90,90,90,90,90\n"
            ",Aggregated",
        )
    )
    rows = report.read_stats_csv(csv_path)
    entries = [
        {"name": "map [control]", "response_times": {"10": 198}, "max_response_time": 20},
        {"name": "map [treatment]", "response_times": {"60": 57}, "max_response_time": 70},
        {"name": "batch [control]", "response_times": {"100": 3}, "max_response_time": 101},
        {"name": "analyze [none]", "response_times": {"40": 19, "90": 1}, "max_response_time": 95},
        {"name": "Aggregated", "response_times": {"1": 1}, "max_response_time": 1},
    ]
    stats_json = tmp_path / "locust.json"
    stats_json.write_text(json.dumps(entries))
    routes = {r.name: r for r in report.route_rows(stats_json, rows)}
    assert set(routes) == {"analyze", "batch", "map"}
    assert (routes["map"].requests, routes["map"].failures, routes["map"].type) == (255, 3, "route")
    assert routes["map"].p95_ms == 60 and routes["map"].arm is None
    assert (routes["analyze"].requests, routes["analyze"].failures) == (20, 1)
    assert routes["analyze"].p50_ms == 40
    # The arms still see only what they answered: /v1/analyze has no arm ("none").
    arms = {a.name: a.requests for a in report.arm_rows(stats_json, rows)}
    assert arms == {"control": 201, "treatment": 57, "none": 20}


def test_bench_values_report_each_route():
    from llama_mapper.bench.locust_run import BenchResult
    from llama_mapper.bench.targets import BenchTargets, Verdict

    def row(kind, name, requests, failures, p95):
        return report.Row(kind, name, None, requests, failures, 1.0, 1.0, p95, p95, p95)

    aggregate = row("", "Aggregated", 30, 1, 50.0)
    result = BenchResult(
        model="mapper",
        version=1,
        targets=BenchTargets("mapper", 1, "cpu-2core", 100.0, 0.05),
        verdict=Verdict(True, ()),
        aggregate=aggregate,
        judged=aggregate,
        arms=[],
        rows=[aggregate],
        report_dir=Path(),
        duration_s=1.0,
        routes=[row("route", "map", 20, 0, 40.0), row("route", "analyze", 10, 1, 80.0)],
    )
    values = result.values()
    assert values["route.analyze.requests"] == 10.0
    assert values["route.analyze.error_rate"] == pytest.approx(0.1)
    assert values["route.analyze.p95_latency_ms"] == 80.0
    assert values["route.map.p95_latency_ms"] == 40.0


def test_history_and_plot(tmp_path):
    history = tmp_path / "locust_stats_history.csv"
    head = (
        "Timestamp,User Count,Type,Name,Requests/s,Failures/s,50%,66%,75%,80%,90%,95%,98%,99%,"
        "99.9%,99.99%,100%,Total Request Count,Total Failure Count,Total Median Response Time,"
        "Total Average Response Time,Total Min Response Time,Total Max Response Time,"
        "Total Average Content Size"
    )
    lines = [head, "100,0,,Aggregated,0,0" + ",N/A" * 11 + ",0,0,0,0,0,0,0"]
    for t in range(101, 111):
        pct = ",".join(str(10 + t - 100) for _ in range(11))
        lines.append(f"{t},5,,Aggregated,20,0,{pct},{(t - 100) * 20},0,10,10,5,30,100")
        lines.append(f"{t},5,POST,map [control],15,0,{pct},{(t - 100) * 15},0,10,10,5,30,100")
    history.write_text("\n".join(lines) + "\n")
    points = report.read_history_csv(history)
    assert len(points) == 20 and points[0].t_s == 1.0 and points[0].p95_ms == 11
    png = report.plot_latency(
        {"router": points}, tmp_path / "latency.png", title="t", target_p95_ms=15
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("requests", "failures", "p95", "passed", "reason"),
    [
        (1000, 5, 90.0, True, None),
        (1000, 5, 100.0, True, None),  # at the target is within it
        (1000, 5, 101.0, False, "p95 101 ms exceeds the target of 100 ms"),
        (1000, 20, 50.0, False, "error rate 2.00% (20/1000) exceeds the budget of 1.00%"),
        (0, 0, math.nan, False, "no request completed"),
        (10, 0, math.nan, False, "no p95 was measured"),
    ],
)
def test_verdict(requests, failures, p95, passed, reason):
    verdict = judge(
        requests=requests,
        failures=failures,
        p95_ms=p95,
        p95_target_ms=100,
        max_error_rate=0.01,
    )
    assert verdict.passed is passed
    if reason:
        assert any(r.startswith(reason) for r in verdict.reasons), verdict.reasons


def test_verdict_reports_both_misses():
    verdict = judge(requests=100, failures=50, p95_ms=900, p95_target_ms=100, max_error_rate=0.01)
    assert len(verdict.reasons) == 2


def test_parse_duration():
    assert parse_duration("90") == parse_duration("90s") == 90
    assert parse_duration("5m") == 300 and parse_duration("1h30m") == 5400
    for bad in ("", "soon", "5x", "m"):
        with pytest.raises(InvalidArgument, match="--duration"):
            parse_duration(bad)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"users": 0}, "--users"),
        ({"spawn_rate": 0}, "--spawn-rate"),
        ({"duration_s": 0}, "--duration"),
        ({"shape": "burst"}, "--shape"),
        ({"workers": -1}, "--workers"),
        ({"batch_size": 101}, "--batch-size"),
        ({"host": "127.0.0.1:8000"}, "--host"),
        ({"tasks": "map=0"}, "--tasks"),
        ({"version": 3, "alias": "champion"}, "--version or --alias"),
    ],
)
def test_config_errors_name_the_flag(kwargs, flag):
    with pytest.raises(InvalidArgument, match=flag):
        BenchConfig(**kwargs)


def test_locust_commands(tmp_path):
    single, workers = locust_commands(BenchConfig(users=7, duration_s=61.5), tmp_path)
    assert workers == []
    assert single[1:3] == ["-m", "locust"] and "--headless" in single
    assert single[single.index("-u") + 1] == "7" and single[single.index("-t") + 1] == "62s"
    assert single[single.index("--csv") + 1] == str(tmp_path / "locust")
    assert single[-1] == "MapperHttpUser"
    master, workers = locust_commands(BenchConfig(workers=3, grpc_host="127.0.0.1:9000"), tmp_path)
    port = master[master.index("--master-bind-port") + 1]
    assert "--master" in master and master[master.index("--expect-workers") + 1] == "3"
    assert len(workers) == 3
    assert all("--worker" in w and w[w.index("--master-port") + 1] == port for w in workers)
    assert all(w[-2:] == ["MapperHttpUser", "MapperGrpcUser"] for w in [master, *workers])
    assert not any("--csv" in w for w in workers)


def test_payloads_are_native_outputs_the_readers_accept(tmp_path):
    result = write_payloads(tmp_path / "payloads.jsonl")
    records = [json.loads(line) for line in Path(result.path).read_text().splitlines()]
    maps = [r for r in records if r["kind"] == "map"]
    assert len(maps) == result.map_count >= 500
    assert result.analyze_count > 0 and sum(result.skipped.values()) < 60
    readers = set(known_detectors())
    for record in maps:
        if record["detector"] in readers:
            read(record["detector"], record["output"])  # raises on a shape the API would refuse
    assert len({r["detector"] for r in maps} - readers) >= 5, "unknown detectors for the model path"
    analyses = [r for r in records if r["kind"] == "analyze"]
    assert len(analyses) == result.analyze_count
    assert all(set(r) == {"kind", "framework", "finding", "context"} for r in analyses)
    # Every body is one /v1/analyze takes, and the contexts move the rubric's risk.
    for body in analyses:
        validate("analyst-context", body["context"])
        rubric.query(body["framework"], body["finding"], body["context"])
    assert {r["framework"] for r in analyses} == set(rubric.FRAMEWORKS)
    assert sum(bool(r["context"]) for r in analyses) > len(analyses) / 2


def test_compare_ratios():
    from llama_mapper.bench.compare import Measured, ratio_rows

    def row(rps, p95):
        return report.Row("", "Aggregated", None, 100, 1, rps, 10.0, p95, 2 * p95, 3 * p95)

    measured = [
        Measured("router", "http://a", row(90.0, 40.0), [], Path()),
        Measured("baseline", "http://b", row(30.0, 160.0), [], Path()),
        Measured("engine", "http://c", row(0.0, math.nan), [], Path()),
    ]
    rows = ratio_rows(measured)
    assert rows[0][-2:] == ("1.00x", "1.00x")
    assert rows[1][-2:] == ("3.00x", "4.00x")
    assert rows[2][-2:] == ("-", "-")


def test_the_benches_model_only_prompts_all_reach_the_model():
    """The serving benches measure the model: none of their payloads may be answered by the rules
    or as a lexical single (a label whose words name one label alone)."""
    import sys
    from pathlib import Path

    from llama_mapper.bench.figures import RAW_LABELS, model_only
    from llama_mapper.inference.hybrid import HybridMapper

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from serving_throughput import payloads

    hybrid = HybridMapper()
    bodies = [model_only(i, "measured") for i in range(len(RAW_LABELS))] + payloads(40, "warm")
    for body in bodies:
        plan = hybrid.plan(body["detector"], body["output"])
        assert plan.ruled == [] and len(plan.pending) == 1, body


def test_the_serving_bench_runs_where_the_engine_can_and_says_where():
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from serving_throughput import VLLM_DEFAULT_BLOCK, attention_projections, bench_engine

    cpu = bench_engine("cpu", "smollm2-135m-instruct", None, None)
    assert (cpu.device_profile, cpu.dtype, cpu.block_size) == ("cpu", "float32", None)
    assert VLLM_DEFAULT_BLOCK["gpu"] == 16
    if not torch.cuda.is_available():
        assert bench_engine("auto", "smollm2-135m-instruct", None, 32).device_profile == "cpu"
        with pytest.raises(SystemExit, match="no CUDA device"):
            bench_engine("gpu", "meta-llama/Meta-Llama-3-8B-Instruct", None, None)
    else:
        gpu = bench_engine("auto", "smollm2-135m-instruct", None, None)
        assert (gpu.device_profile, gpu.dtype) == ("gpu", "bfloat16")

    # Real (tiny, randomly initialized) transformers models of each architecture family: the
    # names the adapter would target are read off the model, not a list.
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Phi3Config

    tiny = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
    llama = AutoModelForCausalLM.from_config(
        LlamaConfig(**tiny, num_hidden_layers=1, num_key_value_heads=2, vocab_size=64)
    )
    phi3 = AutoModelForCausalLM.from_config(
        Phi3Config(**tiny, num_hidden_layers=1, vocab_size=64, pad_token_id=0)
    )
    gpt2 = AutoModelForCausalLM.from_config(
        GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=64)
    )
    assert attention_projections(llama) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert attention_projections(phi3) == ["qkv_proj", "o_proj"]
    with pytest.raises(SystemExit, match="no q/k/v/o"):
        attention_projections(gpt2)


def test_the_baseline_model_refuses_a_device_it_cannot_reach():
    import torch

    from llama_mapper.inference.transformers_engine import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_the_serving_bench_counts_the_tokens_decoding_stops_at():
    """A label cut at its decisive prefix is counted up to the token completing that prefix; the
    baseline, and the engine without the stop, to the end token."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from llama_mapper.domain.taxonomy import default_taxonomy
    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.inference.vllm_engine.decoding import decisive_prefixes

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from serving_throughput import generated_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(prepare_base_model().path))
    labels = tuple(default_taxonomy().names)
    stops = {label: stop for stop, label in decisive_prefixes(labels).items()}
    for label in labels:
        full = len(tokenizer(label, add_special_tokens=False).input_ids) + 1
        assert generated_tokens(tokenizer, label, labels, decisive=False) == full
        cut = generated_tokens(tokenizer, label, labels, decisive=True)
        assert 1 <= cut < full
        ids = tokenizer(label, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids[:cut]).startswith(stops[label])
        assert not tokenizer.decode(ids[: cut - 1]).startswith(stops[label])
    # On a shortlist whose labels differ in their first character, the first token decides.
    pair = ("pii.email_address", "financial.credit_card")
    assert generated_tokens(tokenizer, pair[0], pair, True) < generated_tokens(
        tokenizer, pair[0], labels, True
    )
