"""Job specs: sizes, files, and validation messages that name the field."""

from __future__ import annotations

import json

import pytest

from agentd.control.spec import load_spec, parse_size, signal_number, spec_from_dict, validate_spec
from agentd.protocol import CheckpointContract, ErrorCode, JobSpec, ProtocolError


@pytest.mark.parametrize("text,expected", [("4G", 4 << 30), ("512MiB", 512 << 20), ("1.5k", 1536), ("100", 100),
                                           ("2 GB", 2 << 30), (1024, 1024)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "4X", "-1G", "G", "1.2.3M", True])
def test_parse_size_rejects(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


def test_signal_names():
    assert signal_number("SIGUSR1") == signal_number("usr1") == 10
    with pytest.raises(ValueError, match="SIGNOPE"):
        signal_number("SIGNOPE")


def test_load_toml_and_json(tmp_path):
    toml = tmp_path / "job.toml"
    toml.write_text('name = "train"\nargv = ["python3", "-c", "pass"]\ngpus = 1\nmemory = "4G"\npriority = -2\n'
                    '[checkpoint]\nsignal = "SIGUSR2"\n[labels]\nteam = "nlp"\n')
    spec = load_spec(toml)
    assert spec.memory_bytes == 4 << 30 and spec.checkpoint.signal == "SIGUSR2" and spec.labels == {"team": "nlp"}
    js = tmp_path / "job.json"
    js.write_text(json.dumps({"argv": ["python3"], "memory_bytes": "512MiB"}))
    assert load_spec(js).memory_bytes == 512 << 20


@pytest.mark.parametrize("data,field", [
    ({"argv": ["x"], "bogus": 1}, "bogus"),
    ({"argv": ["x"], "gpus": "two"}, "gpus"),
    ({"name": "no argv"}, "argv"),
    ({"argv": "python train.py"}, "argv"),
    ({"argv": ["x"], "memory": "lots"}, "memory_bytes"),
    ({"argv": ["x"], "checkpoint": {"signal": "SIGUSR1", "when": "now"}}, "checkpoint.when"),
])
def test_bad_dicts_name_the_field(data, field):
    with pytest.raises(ProtocolError) as e:
        spec_from_dict(data)
    assert e.value.code == ErrorCode.BAD_MESSAGE
    assert e.value.field == field, (e.value.field, e.value.message)


def test_garbage_files(tmp_path):
    for name, text in (("a.toml", "argv = [unclosed"), ("b.json", "{nope"), ("c.json", "[1, 2]")):
        (tmp_path / name).write_text(text)
        with pytest.raises(ProtocolError) as e:
            load_spec(tmp_path / name)
        assert e.value.code == ErrorCode.BAD_MESSAGE and e.value.message
    with pytest.raises(ProtocolError, match="cannot read"):
        load_spec(tmp_path / "missing.toml")


@pytest.mark.parametrize("spec,field,needle", [
    (JobSpec(argv=["python3"], priority=11), "priority", "<= 10"),
    (JobSpec(argv=["python3"], gpus=3), "gpus", "this node has 2"),
    (JobSpec(argv=["python3"], gpus=-1), "gpus", ">= 0"),
    (JobSpec(argv=["python3"], memory_bytes=-5), "memory_bytes", ">= 1"),
    (JobSpec(argv=["python3"], cpus=-1.0), "cpus", "> 0"),
    (JobSpec(argv=["python3"], cpus=64.0), "cpus", "this node has"),
    (JobSpec(argv=["no-such-program-xyz"]), "argv", "not on PATH"),
    (JobSpec(argv=["/etc/passwd"]), "argv", "not executable"),
    (JobSpec(argv=[]), "argv", "length >= 1"),
    (JobSpec(argv=["python3"], cpus=float("nan")), "cpus", "> 0"),
    (JobSpec(argv=["python3"], name="n" * 300), "name", "<= 256"),
    (JobSpec(argv=["python3"], env={"A=B": "1"}), "env", "regex"),
    (JobSpec(argv=["python3"], checkpoint=CheckpointContract(timeout_s=float("inf"))), "checkpoint.timeout_s", "<= 86400"),
    (JobSpec(argv=["python3"], checkpoint=CheckpointContract(signal="SIGWHAT")), "checkpoint.signal", "unknown"),
    (JobSpec(argv=["python3"], cwd="/no/such/dir"), "cwd", "not a directory"),
    (JobSpec(argv=["python3"], user="no-such-user-xyz"), "user", "does not exist"),
    (JobSpec(argv=["a", "b"], shell=True), "argv", "one command string"),
])
def test_validate_names_field(spec, field, needle):
    with pytest.raises(ProtocolError) as e:
        validate_spec(spec, gpu_count=2, cpu_count=2, mem_total_bytes=1 << 30)
    assert e.value.code == ErrorCode.INVALID and e.value.field == field and needle in e.value.message


def test_shell_skips_executable_check():
    validate_spec(JobSpec(argv=["no-such-program-xyz && true"], shell=True), gpu_count=0)
