"""The benchmark harness's bookkeeping (what can be checked without a GPU): provenance,
storage, timing helpers, a run cut into pieces, the command line."""

import datetime
import json

import pytest

from softmax_lib import bench

PROVENANCE_KEYS = {"gpu", "sm_count", "driver", "cuda", "torch", "triton", "python", "hostname", "date_utc"}


def test_provenance_has_every_key_and_an_iso_utc_date():
    info = bench.provenance()
    assert PROVENANCE_KEYS <= set(info)
    date = datetime.datetime.fromisoformat(info["date_utc"])
    assert date.utcoffset() == datetime.timedelta(0)
    json.dumps(info)  # must be storable


def test_write_then_load_round_trips_and_adds_provenance(tmp_path):
    payload = {"kind": "demo", "results": {"float32": [{"n": 256, "fraction_of_copy": 0.93}]}}
    path = bench.write_results("demo", payload, tmp_path / "out")
    assert path == tmp_path / "out" / "demo.json"
    loaded = bench.load_results("demo", tmp_path / "out")
    assert loaded["results"] == payload["results"]
    assert PROVENANCE_KEYS <= set(loaded["provenance"])


def test_write_keeps_an_existing_provenance(tmp_path):
    payload = {"provenance": {"gpu": "NVIDIA H200"}, "x": 1}
    bench.write_results("kept", payload, tmp_path)
    assert bench.load_results("kept", tmp_path)["provenance"] == {"gpu": "NVIDIA H200"}


def test_missing_results_are_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        bench.load_results("no_such_results_file")
    with pytest.raises(FileNotFoundError):
        bench.load_results("absent", tmp_path)


@pytest.mark.parametrize("name", ["", "a/b"])
def test_bad_result_name_is_a_value_error(name, tmp_path):
    with pytest.raises(ValueError, match="name"):
        bench.write_results(name, {}, tmp_path)


def test_command_line_without_gpu_says_so_and_fails(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    assert bench.main(["--out", "unused", "--only", "softmax"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


def test_host_time_per_call_is_the_wall_time_of_a_call_that_only_uses_the_host():
    import time

    slept = []

    def nap():
        slept.append(1)
        time.sleep(0.003)

    us = bench.host_us(nap, calls=5, warmup=1)
    assert len(slept) == 6                       # one warm-up call, five timed
    assert 3000 <= us < 3000 * 4                 # time.sleep never returns early
    for calls, error in ((0, ValueError), (-1, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match="calls"):
            bench.host_us(nap, calls=calls)


def test_host_profile_ranks_the_function_that_takes_the_time_first():
    import time

    def slow():
        time.sleep(0.002)

    def fast():
        return 1

    def both():
        fast()
        slow()

    rows = bench.host_profile(both, calls=4, top=20)
    names = [r["function"].split(" ")[0] for r in rows]
    assert names[0] == "both"
    assert names.index("slow") < names.index("fast")
    slow_row = next(r for r in rows if r["function"].startswith("slow "))
    assert slow_row["calls_per_call"] == 1.0
    assert slow_row["cumulative_us"] >= 2000 > slow_row["own_us"]  # the time is inside sleep
    assert all(r["cumulative_us"] >= r["own_us"] >= 0 for r in rows)
    assert len(bench.host_profile(both, calls=1, top=2)) == 2
    with pytest.raises(ValueError, match="top"):
        bench.host_profile(both, top=0)
    with pytest.raises(ValueError, match="calls"):
        bench.host_profile(both, calls=0)
    with pytest.raises(TypeError, match="top"):
        bench.host_profile(both, top=1.5)


def test_graph_timing_without_a_gpu_says_so():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        bench.time_ms_graph(lambda: None)


# --------------------------------------------------------------------------------------
# A run cut into several processes: deadline, checkpoint, resume
# --------------------------------------------------------------------------------------


def test_stored_results_are_complete_runs():
    folder = bench.results_dir()
    if folder is None or not any(folder.glob("*.json")):
        pytest.skip("no results stored")
    for path in folder.glob("*.json"):
        assert json.loads(path.read_text()).get("complete", True) is True, path.name


def test_a_deadline_passes_only_when_its_time_is_up():
    import time

    assert not bench.Deadline(None).passed()
    assert not bench.Deadline(60).passed()
    soon = bench.Deadline(0.01)
    time.sleep(0.02)
    assert soon.passed()
    for bad in (0, -1.0, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="seconds"):
            bench.Deadline(bad)


def test_writing_leaves_no_partial_file_behind(tmp_path):
    bench.write_results("demo", {"kind": "demo", "x": 1}, tmp_path)
    bench.write_results("demo", {"kind": "demo", "x": 2}, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["demo.json"]
    assert bench.load_results("demo", tmp_path)["x"] == 2


def test_resume_continues_or_keeps_a_file_from_the_same_setup_only(tmp_path, here):
    assert bench.resume_from("run", tmp_path, "demo", here) is None          # nothing there
    bench.write_results("run", {"kind": "demo", "complete": True, "provenance": here}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", here)["complete"] is True   # finished: kept
    assert bench.resume_from("run", tmp_path, "demo", dict(here, gpu="NVIDIA H100")) is None  # replaced
    assert bench.resume_from("run", tmp_path, "demo", here, {"rep": 20}) is None  # an older format
    bench.write_results("run", {"kind": "demo", "complete": False, "provenance": here, "rows": [1]}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", dict(here, hostname="other"))["rows"] == [1]
    with pytest.raises(ValueError, match="holds 'demo' results, not 'other'"):
        bench.resume_from("run", tmp_path, "other", here)
    for key in bench.SAME_SETUP:
        with pytest.raises(ValueError, match=key):
            bench.resume_from("run", tmp_path, "demo", dict(here, **{key: "something else"}))
    bench.write_results("run", {"kind": "demo", "complete": False, "provenance": here, "rep": 20}, tmp_path)
    assert bench.resume_from("run", tmp_path, "demo", here, {"rep": 20}) is not None
    with pytest.raises(ValueError, match="rep: 20 there, 10 here"):
        bench.resume_from("run", tmp_path, "demo", here, {"rep": 10})


def test_parts_list_every_process_and_keep_the_first_provenance(here):
    first = bench.run_parts(None, here)
    assert first["provenance"] == here
    assert first["parts"] == [{"hostname": "vm", "date_utc": here["date_utc"]}]
    later = dict(here, hostname="vm2", date_utc="2026-11-24T10:00:00+00:00")
    second = bench.run_parts({"provenance": here, "parts": first["parts"]}, later)
    assert second["provenance"] == here
    assert [p["hostname"] for p in second["parts"]] == ["vm", "vm2"]
    older = bench.run_parts({"provenance": here}, later)  # a file written before parts existed
    assert [p["hostname"] for p in older["parts"]] == ["vm", "vm2"]


def test_the_command_line_refuses_a_tuning_file_it_cannot_use(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--only", "tune", "--tuned", str(tmp_path / "t.json")])
    assert "--tuned applies to the measurements" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--tuned", str(tmp_path / "missing.json")])
    assert "cannot read" in capsys.readouterr().err


def test_a_budget_must_be_positive():
    with pytest.raises(SystemExit):
        bench.main(["--budget-s", "0"])
